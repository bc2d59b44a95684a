"""The Python API: what the command line does, from a notebook or a program.

    import plantpheno as pp

    config = pp.load_config("demo", {"training.epochs": 5}, data_path="leaves/")
    run = pp.train(config)                      # a Run: run.path, run.metrics(), run.history
    run.evaluate(split="val")                   # or pp.evaluate(run, split="val")
    pp.register_model(run, "leafnet", alias="candidate")
    model = pp.load_model("leafnet@candidate")  # NAME, NAME/3, NAME@alias, a run directory or a package folder
    model.predict(["leaf.jpg", pil_image, array])   # [Prediction(label=..., confidence=..., probabilities=...)]
    round = pp.suggest(run, pool="unlabelled/", budget=50)   # what to label next (plantpheno data suggest)

Each function is the command of the same name (``plantpheno train``, ``evaluate``, ``models register``,
``predict``), runs the same code and raises the same errors (:class:`~plantpheno.errors.PlantPhenoError`
subclasses, each naming what was wrong). Model references and registry locations resolve exactly as on the
command line. Importing this module loads no torch; the functions that need it load it when they run.

What you see: ``train``, ``resume`` and ``evaluate`` print what the command line prints (epoch lines,
warnings, progress bars on a terminal) to stderr, unless ``verbose=False``, which sends the lines to
Python's logging instead (logger ``plantpheno``); ``reporter=`` (:mod:`plantpheno.reporting`) replaces
both. ``predict`` shows nothing unless ``progress=True``.
"""

from __future__ import annotations

from plantpheno.api.models import Model, Prediction, Registry, load_model, register_model
from plantpheno.api.runs import Run, Trainer, evaluate, load_config, open_run, resume, train
from plantpheno.api.suggest import suggest

__all__ = ["Model", "Prediction", "Registry", "Run", "Trainer", "evaluate", "load_config", "load_model",
           "open_run", "register_model", "resume", "suggest", "train"]
