"""The Python API: what the command line does, from a notebook or a program.

    import plantpheno as pp

    config = pp.load_config("configs/demo.yaml", {"training.epochs": 5}, data_path="leaves/")
    run = pp.train(config)                      # a Run: run.path, run.metrics(), run.history
    run.evaluate(split="val")                   # or pp.evaluate(run, split="val")
    pp.register_model(run, "leafnet", alias="candidate")
    model = pp.load_model("leafnet@candidate")  # NAME, NAME/3, NAME@alias, a run directory or a package folder
    model.predict(["leaf.jpg", pil_image, array])   # [Prediction(label=..., confidence=..., probabilities=...)]

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

import os
import weakref
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from plantpheno.errors import DataError, RunDirError
from plantpheno.reporting import ConsoleReporter, LoggingReporter, Reporter
from plantpheno.rundir import CONFIG_FILE, STATUS_FILE, RunDir

if TYPE_CHECKING:
    from plantpheno.config import Config
    from plantpheno.registry.predict import ImageInput, Predictor
    from plantpheno.registry.store import ModelRegistry, VersionInfo
    from plantpheno.runs import RunSummary

__all__ = ["Model", "Prediction", "Registry", "Run", "Trainer", "evaluate", "load_config", "load_model",
           "open_run", "register_model", "resume", "train"]


# ----------------------------------------------------------------------------------------------
# Configs and training
# ----------------------------------------------------------------------------------------------


def load_config(config: str | os.PathLike[str] | Config | Mapping[str, Any] | None = None,
                overrides: Sequence[str] | Mapping[str, Any] = (), *, data_path: str | os.PathLike[str] | None = None,
                output_path: str | os.PathLike[str] | None = None) -> Config:
    """A validated, frozen :class:`~plantpheno.config.Config`.

    Args:
        config: a YAML file, a ``Config`` (to derive a new one from), or a mapping laid out as the YAML file is.
        overrides: ``["training.epochs=5", ...]`` (values parsed as YAML, as on the command line) or
            ``{"training.epochs": 5, ...}`` (values used as they are). They win over everything else.
        data_path: the dataset, as ``plantpheno train --data-path``: an image folder sets ``data.root``, a CSV
            file sets ``data.manifest`` (the other is cleared).
        output_path: where runs go (``output_dir``), as ``--output-path``.

    Raises:
        ConfigError: listing every invalid field with its dotted name, the value given and what was expected.
    """
    from plantpheno import config as schema

    if isinstance(config, schema.Config):
        base, path = schema.config_to_dict(config), None
    elif isinstance(config, Mapping):
        base, path = dict(config), None
    else:
        base, path = None, config
    return schema.load_config(path, overrides, base=base, data_path=data_path, output_path=output_path)


def train(config: str | os.PathLike[str] | Config | Mapping[str, Any],
          overrides: Sequence[str] | Mapping[str, Any] = (), *, data_path: str | os.PathLike[str] | None = None,
          output_path: str | os.PathLike[str] | None = None, verbose: bool = True, reporter: Reporter | None = None,
          callbacks: Sequence[object] = ()) -> Run:
    """Train a new run, evaluate its best checkpoint on the held-out split, register it when
    ``registry.name`` is set, and return the :class:`Run` (``plantpheno train``).

    ``config``, ``overrides``, ``data_path`` and ``output_path`` are those of :func:`load_config`.
    ``callbacks`` are trainer callbacks (objects with ``on_*`` methods, see ``training/callbacks.py``).
    Ctrl-C finishes the current batch, saves ``checkpoints/last.pt`` and raises
    :class:`~plantpheno.training.trainer.Interrupted`; :func:`resume` continues the run.
    """
    return Trainer(config, overrides, data_path=data_path, output_path=output_path, verbose=verbose,
                   reporter=reporter, callbacks=callbacks).fit()


def resume(run: Run | str | os.PathLike[str], *, verbose: bool = True, reporter: Reporter | None = None,
           callbacks: Sequence[object] = ()) -> Run:
    """Continue an interrupted run from its last checkpoint, exactly where it stopped (``plantpheno train
    --resume``), then evaluate it as :func:`train` does."""
    from plantpheno import pipeline

    result = pipeline.resume(_run_path(run), callbacks=callbacks, reporter=_reporter(verbose, reporter))
    return Run(result.run_dir)


def evaluate(run: Run | str | os.PathLike[str], *, split: Literal["train", "val", "test"] = "test",
             device: str | None = None, verbose: bool = True, reporter: Reporter | None = None) -> dict[str, Any]:
    """Evaluate a run's best checkpoint on one of its splits (``plantpheno evaluate``): writes
    ``RUN_DIR/eval/SPLIT/`` and returns its metrics (with ``headline_metric`` and its ``confidence_interval``)."""
    from plantpheno import pipeline

    return pipeline.evaluate_run(_run_path(run), split=split, device=device, reporter=_reporter(verbose, reporter))


class Trainer:
    """The specification's trainer object: a config, validated when the trainer is made, then :meth:`fit`.

    ``Trainer(config, overrides, ...).fit()`` is :func:`train`; the training loop itself is
    :class:`plantpheno.training.trainer.Trainer`, which :func:`train` builds for each training phase.
    """

    def __init__(self, config: str | os.PathLike[str] | Config | Mapping[str, Any],
                 overrides: Sequence[str] | Mapping[str, Any] = (), *,
                 data_path: str | os.PathLike[str] | None = None, output_path: str | os.PathLike[str] | None = None,
                 verbose: bool = True, reporter: Reporter | None = None, callbacks: Sequence[object] = ()) -> None:
        self.config: Config = load_config(config, overrides, data_path=data_path, output_path=output_path)
        self.reporter = _reporter(verbose, reporter)
        self.callbacks = tuple(callbacks)

    def fit(self) -> Run:
        """Train, evaluate (and register, with ``registry.name``); the finished :class:`Run`."""
        from plantpheno import pipeline

        result = pipeline.train(self.config, callbacks=self.callbacks, reporter=self.reporter)
        return Run(result.run_dir)

    def __repr__(self) -> str:
        c = self.config
        return (f"Trainer({c.task}, backbone={c.model.backbone!r}, data={c.data.root or c.data.manifest}, "
                f"output={c.output_dir / c.experiment})")


def _reporter(verbose: bool, reporter: Reporter | None) -> Reporter:
    if reporter is not None:
        return reporter
    return ConsoleReporter() if verbose else LoggingReporter()


# ----------------------------------------------------------------------------------------------
# Runs
# ----------------------------------------------------------------------------------------------


class Run:
    """A run directory and what it holds: config, status, per-epoch history, evaluation metrics.

    Every property reads the files afresh, so a ``Run`` of a run in progress shows its progress.
    ``os.fspath(run)`` is its folder: a ``Run`` goes wherever a path does.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not RunDir(self.path).is_run():
            why = "no such folder" if not self.path.exists() else f"no {CONFIG_FILE} or {STATUS_FILE} in it"
            raise RunDirError(f"{self.path} is not a plantpheno run directory ({why})")

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config(self) -> Config:
        """The resolved config the run was started with."""
        return RunDir(self.path).read_config()

    @property
    def status(self) -> str:
        """``running``, ``interrupted``, ``failed``, ``completed`` (or ``unknown`` before ``run.json`` exists)."""
        return self.summary.status

    @property
    def info(self) -> dict[str, Any]:
        """``run.json``: status, best epoch, headline test metric with its interval, registration, tracker ids."""
        return RunDir(self.path).read_status()

    @property
    def history(self) -> list[dict[str, Any]]:
        """One dict per finished epoch: ``epoch``, ``lr``, ``train/...`` and ``val/...`` metrics, epoch time,
        images/s (``metrics.jsonl``)."""
        from plantpheno.runs import read_history

        return read_history(self.path)

    @property
    def summary(self) -> RunSummary:
        """What ``plantpheno runs list`` shows about the run."""
        from plantpheno.runs import read_run

        return read_run(self.path)

    def metrics(self, split: Literal["train", "val", "test"] = "test") -> dict[str, Any]:
        """The evaluation of one split (``eval/SPLIT/metrics.json``): the task's metrics, ``headline_metric``,
        its bootstrap ``confidence_interval``, the number of images and the checkpoint's epoch."""
        import json

        path = RunDir(self.path).eval(split).metrics
        if not path.is_file():
            raise RunDirError(f"{self.path} has no evaluation on the {split} split ({path} is missing); run "
                              f"plantpheno.evaluate(run, split={split!r}) first")
        return json.loads(path.read_text(encoding="utf-8"))

    @property
    def best_checkpoint(self) -> Path | None:
        """The checkpoint that evaluation, registration and prediction use (the best, else the last)."""
        return RunDir(self.path).checkpoint_to_use()

    def evaluate(self, split: Literal["train", "val", "test"] = "test", **options: Any) -> dict[str, Any]:
        """:func:`evaluate` on this run."""
        return evaluate(self, split=split, **options)

    def register(self, name: str, *, alias: str | None = None, registry: str | None = None) -> VersionInfo:
        """:func:`register_model` of this run."""
        return register_model(self, name, alias=alias, registry=registry)

    def load_model(self, *, device: str = "cpu") -> Model:
        """This run's best checkpoint, ready to predict (as ``plantpheno predict RUN_DIR``)."""
        return load_model(self, device=device)

    def __fspath__(self) -> str:
        return str(self.path)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Run) and self.path.resolve() == other.path.resolve()

    def __hash__(self) -> int:
        return hash(self.path.resolve())

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"


def open_run(path: str | os.PathLike[str]) -> Run:
    """The :class:`Run` in ``path`` (a run directory, ``OUTPUT_DIR/<experiment>/<run>``)."""
    return Run(path)


def _run_path(run: Run | str | os.PathLike[str]) -> Path:
    return run.path if isinstance(run, Run) else Path(run)


# ----------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------


class Registry:
    """The model registry (MLflow's), as the ``plantpheno models`` commands use it.

    ``uri=None`` finds the registry as the command line does without ``--registry``: a run registers where its
    config says (``registry.uri``, ``$PLANTPHENO_REGISTRY_URI``, else its tracking store); every other call uses
    ``$PLANTPHENO_REGISTRY_URI``, else ``runs/mlflow.db``. Versions are returned as
    :class:`~plantpheno.registry.store.VersionInfo` (name, version, aliases, source, lineage tags).
    """

    def __init__(self, uri: str | None = None) -> None:
        self.uri = uri

    def register_model(self, run: Run | str | os.PathLike[str], name: str, *,
                       alias: str | None = None) -> VersionInfo:
        """Register a run's best checkpoint as a new version of ``name`` (an MLflow pyfunc model holding the
        plantpheno package); ``alias`` also points that alias at it."""
        path = _run_path(run)
        return self._store(run=path).register(path, name=name, alias=alias)

    def list_models(self) -> list[VersionInfo]:
        """The latest version of every registered model."""
        return self._store().list_models()

    def versions(self, name: str) -> list[VersionInfo]:
        """Every version of ``name``, oldest first."""
        return self._store().versions(name)

    def get(self, ref: str) -> VersionInfo:
        """The version ``NAME``, ``NAME/VERSION`` or ``NAME@alias`` means."""
        from plantpheno.registry.refs import parse_ref

        return self._store().resolve(parse_ref(ref))

    def promote(self, name: str, version: int, alias: str) -> VersionInfo:
        """Point ``alias`` at ``version`` (atomically: the alias never resolves to two versions)."""
        return self._store().promote(name, version, alias)

    def delete(self, name: str, version: int | None = None) -> None:
        """Delete one version, or the whole model."""
        self._store().delete(name, version)

    def load_model(self, ref: str, *, device: str = "cpu") -> Model:
        """:func:`load_model` from this registry."""
        return load_model(ref, registry=self.uri, device=device)

    def _store(self, *, run: Path | None = None) -> ModelRegistry:
        return _model_registry(self.uri, run=run)

    def __repr__(self) -> str:
        return f"Registry({self.uri!r})"


def register_model(run: Run | str | os.PathLike[str], name: str, *, alias: str | None = None,
                   registry: str | None = None) -> VersionInfo:
    """Register a run as a new version of ``name`` (``plantpheno models register RUN --name NAME``), in
    ``registry`` or where the run's config registers by default."""
    return Registry(registry).register_model(run, name, alias=alias)


def _model_registry(uri: str | None, *, run: Path | None = None) -> ModelRegistry:
    """The registry a command uses, found as ``plantpheno models`` finds it (cli/models_cmd.py ``_registry``)."""
    from plantpheno.registry.store import ModelRegistry, default_registry_uri, run_registry_uri

    if uri:
        return ModelRegistry(uri)
    if run is not None:
        return ModelRegistry(run_registry_uri(RunDir(run).read_config()))
    return ModelRegistry(default_registry_uri())


# ----------------------------------------------------------------------------------------------
# Prediction
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prediction:
    """One image's prediction: ``label``, ``confidence`` and ``probabilities`` (class -> probability) for a
    classifier, ``value`` (in the trait's units) for a trait model. ``source`` is the file's path (None for
    images given in memory); ``error`` says why an image could not be read (only with ``on_bad_image="skip"``)."""

    source: str | None
    label: str | None = None
    confidence: float | None = None
    probabilities: dict[str, float] | None = None
    value: float | None = None
    error: str | None = None

    @property
    def predicted(self) -> str | float | None:
        """The class name, or the trait value."""
        return self.label if self.label is not None else self.value

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Model:
    """A trained model with its preprocessing, ready to predict: made by :func:`load_model`.

    Holds the network in memory (and, for a registry version, a temporary copy of its package until
    :meth:`close`, the end of a ``with`` block, or garbage collection).
    """

    def __init__(self, predictor: Predictor, stack: ExitStack, source: str) -> None:
        self._predictor = predictor
        self.source = source
        self._close = weakref.finalize(self, stack.close)

    @property
    def task(self) -> str:
        """``classification`` or ``regression``."""
        return str(self.meta["task"])

    @property
    def class_names(self) -> list[str] | None:
        return self.meta.get("class_names")

    @property
    def meta(self) -> dict[str, Any]:
        """The package's description: backbone, task, classes or trait scaling, preprocessing, lineage, test
        metrics."""
        return self._predictor.package.meta

    @property
    def card(self) -> str:
        """The model card (Markdown)."""
        from plantpheno.registry.package import CARD_FILE

        path = self._predictor.package.folder / CARD_FILE
        return path.read_text(encoding="utf-8") if path.is_file() else ""

    def predict(self, images: ImageInput | Sequence[ImageInput], *, batch_size: int = 32,
                on_bad_image: Literal["error", "skip"] = "error", progress: bool = False) -> list[Prediction]:
        """Predict for one image or many, in the order given.

        An image is a file path (a folder means every image file in it), encoded image bytes, a PIL image, or a
        numpy array, channels last: ``(H, W)`` grey, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA, uint8 (0-255) or
        float (0-1); a ``(N, H, W, C)`` array is N images. Each is decoded and preprocessed as training did.

        Raises:
            DataError: listing every image that cannot be read; with ``on_bad_image="skip"`` those come back as
                predictions with ``error`` set instead.
        """
        if on_bad_image not in ("error", "skip"):
            raise DataError(f"on_bad_image: got {on_bad_image!r}; expected 'error' or 'skip'")
        items, sources = _expand(images)
        results, bad = self._predictor.predict_images(items, batch_size=batch_size, progress=progress)
        if bad and on_bad_image == "error":
            listed = "; ".join(f"{sources[i] or f'image {i}'}: {why}" for i, why in bad)
            raise DataError(f"{len(bad)} of {len(items)} image(s) could not be read: {listed}")
        predictions: list[Prediction | None] = [None] * len(items)
        for i, output in results:
            described = self._predictor.describe(output)
            if "probabilities" in described:
                predictions[i] = Prediction(sources[i], label=described["predicted"],
                                            confidence=described["confidence"],
                                            probabilities=described["probabilities"])
            else:
                predictions[i] = Prediction(sources[i], value=described["predicted"])
        for i, why in bad:
            predictions[i] = Prediction(sources[i], error=why)
        return [p for p in predictions if p is not None]

    def close(self) -> None:
        """Remove the temporary package copy (the model stays usable in memory)."""
        self._close()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        what = f"{len(self.class_names)} classes" if self.class_names else "trait"
        return f"Model({self.source!r}, {self.meta['backbone']}, {self.task}, {what})"


def load_model(ref: str | os.PathLike[str] | Run, *, registry: str | None = None, device: str = "cpu") -> Model:
    """A model ready to predict, from a registry reference (``NAME`` = latest version, ``NAME/3``,
    ``NAME@alias``), a run directory (its best checkpoint) or a model package folder (also a registered
    version's MLflow model folder) — resolved exactly as ``plantpheno predict MODEL`` resolves it.

    ``registry`` is the registry URI (default ``$PLANTPHENO_REGISTRY_URI``, else ``runs/mlflow.db``);
    ``device`` is cpu (default), cuda, mps or auto.
    """
    from plantpheno.registry.predict import Predictor, open_model

    source = str(_run_path(ref)) if isinstance(ref, (Run, os.PathLike)) else str(ref)
    stack = ExitStack()
    try:
        predictor = Predictor(open_model(source, stack, registry_uri=registry), device=device)
    except BaseException:
        stack.close()
        raise
    return Model(predictor, stack, source)


def _expand(images: Any) -> tuple[list[Any], list[str | None]]:
    """The images to predict, one per item (folders expanded to their image files), and each one's path."""
    import numpy as np
    from PIL import Image

    from plantpheno.registry.predict import collect_images

    one = isinstance(images, (str, os.PathLike, bytes, bytearray, memoryview, Image.Image)) or (
        isinstance(images, np.ndarray) and images.ndim in (2, 3))
    items: list[Any] = []
    sources: list[str | None] = []
    for item in [images] if one else list(images):
        if isinstance(item, (str, os.PathLike)):
            path = Path(item)
            found = collect_images([path]) if path.is_dir() else [path]
            items += found
            sources += [str(p) for p in found]
        else:
            items.append(item)
            sources.append(None)
    return items, sources
