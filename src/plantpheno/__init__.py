"""plantpheno: train, evaluate and track plant-phenotyping image models from one YAML config.

The Python API (:mod:`plantpheno.api`) is available at the top level::

    import plantpheno as pp

    run = pp.train("demo", {"training.epochs": 5})
    model = pp.load_model(run)
    model.predict("leaf.jpg")

Its names load on first use, so ``import plantpheno`` stays fast and loads no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from plantpheno.version import __version__

__all__ = ["Model", "Prediction", "Registry", "Run", "Trainer", "__version__", "evaluate", "load_config", "load_model",
           "open_run", "register_model", "resume", "suggest", "train"]
_API = frozenset(__all__) - {"__version__"}  # the names plantpheno.api defines

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names come from __getattr__
    from plantpheno.api import (
        Model,
        Prediction,
        Registry,
        Run,
        Trainer,
        evaluate,
        load_config,
        load_model,
        open_run,
        register_model,
        resume,
        suggest,
        train,
    )


def __getattr__(name: str) -> object:
    if name in _API:
        from plantpheno import api

        return getattr(api, name)
    raise AttributeError(f"module 'plantpheno' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*(n for n in globals() if not n.startswith("_") and n != "TYPE_CHECKING"), *__all__})
