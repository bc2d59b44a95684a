"""Configs, training, evaluation and run directories, from Python (see :mod:`plantpheno.api`)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from plantpheno.errors import ArgumentError, RunDirError, short_repr
from plantpheno.reporting import ConsoleReporter, LoggingReporter, Reporter
from plantpheno.run.folder import CONFIG_FILE, STATUS_FILE, RunDir

if TYPE_CHECKING:
    from plantpheno.api.models import Model
    from plantpheno.config import Config
    from plantpheno.registry.store import VersionInfo
    from plantpheno.run.listing import RunSummary


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
    import plantpheno.config as schema

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
          callbacks: Sequence[object] = (), budget: str | float | None = None) -> Run:
    """Train a new run, evaluate its best checkpoint on the held-out split, register it when
    ``registry.name`` is set, and return the :class:`Run` (``plantpheno train``).

    ``budget`` (``"15m"``, ``"1h30m"``, or seconds; or ``budget.time`` in the config) is budget mode
    (``plantpheno train --budget``): the best candidate on validation data within that wall-clock time, trained as
    the returned run, whose folder holds the leaderboard (``budget_leaderboard.csv``).

    ``config``, ``overrides``, ``data_path`` and ``output_path`` are those of :func:`load_config`.
    ``callbacks`` are trainer callbacks (objects with ``on_*`` methods, see ``training/callbacks.py``).
    Ctrl-C finishes the current batch, saves ``checkpoints/last.pt`` and raises
    :class:`~plantpheno.training.loop.Interrupted`; :func:`resume` continues the run.
    """
    return Trainer(config, overrides, data_path=data_path, output_path=output_path, verbose=verbose,
                   reporter=reporter, callbacks=callbacks, budget=budget).fit()


def resume(run: Run | str | os.PathLike[str], *, verbose: bool = True, reporter: Reporter | None = None,
           callbacks: Sequence[object] = ()) -> Run:
    """Continue an interrupted run from its last checkpoint, exactly where it stopped (``plantpheno train
    --resume``), then evaluate it as :func:`train` does."""
    import plantpheno.pipeline as pipeline

    result = pipeline.resume(_run_path(run), callbacks=callbacks, reporter=_reporter(verbose, reporter))
    return Run(result.run_dir)


def evaluate(run: Run | str | os.PathLike[str], *, split: Literal["train", "val", "test"] | None = None,
             data: str | os.PathLike[str] | None = None, class_map: str | os.PathLike[str] | None = None,
             name: str | None = None, device: str | None = None, verbose: bool = True,
             reporter: Reporter | None = None, fit_unknowns: bool = False,
             calibrate_on: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Evaluate a run's best checkpoint on one of its splits (``plantpheno evaluate``): writes
    ``RUN_DIR/eval/SPLIT/`` and returns its metrics (with ``headline_metric`` and its ``confidence_interval``).

    With ``data`` (an image folder or a CSV manifest of another source), evaluate on that source instead
    (``plantpheno evaluate RUN --data``): ``class_map`` is a YAML file mapping its labels to the run's classes,
    ``name`` the folder under ``RUN_DIR/eval/``; the metrics then hold ``source``, ``shift`` (the drop from the
    test split with its interval, per-class drops, calibration), ``separability`` and, when the run has an OOD
    detector, ``unknowns`` (the share flagged unknown, accuracy on kept and flagged images, AUROC and FPR95 against
    the test split). ``calibrate_on``: other labelled images of that source (never the evaluated ones) to fit its
    own temperature on (``shift.calibration.source_temperature``). ``fit_unknowns``: first fit the run's OOD
    detector on its train/val splits (a run trained before plantpheno had one), as ``plantpheno evaluate
    --fit-unknowns``."""
    if not isinstance(fit_unknowns, bool):
        raise ArgumentError(f"fit_unknowns: got {short_repr(fit_unknowns)}; expected True or False")
    if data is None:
        if class_map is not None or name is not None or calibrate_on is not None:
            raise ArgumentError("class_map, name and calibrate_on go with data (an evaluation on another source)")
        import plantpheno.pipeline as pipeline

        return pipeline.evaluate_run(_run_path(run), split=check_split("test" if split is None else split), device=device,
                                     reporter=_reporter(verbose, reporter), fit_unknowns=fit_unknowns)
    if split is not None:
        raise ArgumentError("split and data exclude each other: data evaluates on another source")
    import plantpheno.source_eval as source_eval

    spec = source_eval.SourceSpec(Path(data), Path(class_map) if class_map is not None else None, name,
                                  Path(calibrate_on) if calibrate_on is not None else None)
    source_eval.source_name(spec)  # a bad name fails before the detector's fit
    if fit_unknowns:  # the detector first, and the test split scored with it
        import plantpheno.pipeline as pipeline

        pipeline.evaluate_run(_run_path(run), split="test", device=device, reporter=_reporter(verbose, reporter),
                              fit_unknowns=True)
    # the metrics as metrics.json holds them, as for a split (the record's extra blocks included)
    return source_eval.evaluate_source(_run_path(run), spec, device=device,
                                       reporter=_reporter(verbose, reporter)).to_dict()


SPLITS = ("train", "val", "test")


def check_split(split: object) -> str:
    """``split`` if it names a split (train, val or test)."""
    if not isinstance(split, str) or split not in SPLITS:
        raise ArgumentError(f"split: got {short_repr(split)}; expected one of {', '.join(SPLITS)}")
    return split


def check_eval_name(name: object) -> str:
    """``name`` if it names a split or an evaluation on another source (a plain folder name under ``eval/``)."""
    import plantpheno.source_eval as source_eval

    if isinstance(name, str) and (name in SPLITS or source_eval.is_source_name(name)):
        return name
    raise ArgumentError(f"split: got {short_repr(name)}; expected one of {', '.join(SPLITS)} or the name of an "
                        f"evaluation on another source (1-64 letters, digits, '_', '.' or '-')")


class Trainer:
    """The specification's trainer object: a config, validated when the trainer is made, then :meth:`fit`.

    ``Trainer(config, overrides, ...).fit()`` is :func:`train`; the training loop itself is
    :class:`plantpheno.training.loop.Trainer`, which :func:`train` builds for each training phase.
    """

    def __init__(self, config: str | os.PathLike[str] | Config | Mapping[str, Any],
                 overrides: Sequence[str] | Mapping[str, Any] = (), *,
                 data_path: str | os.PathLike[str] | None = None, output_path: str | os.PathLike[str] | None = None,
                 verbose: bool = True, reporter: Reporter | None = None, callbacks: Sequence[object] = (),
                 budget: str | float | None = None) -> None:
        self.config: Config = load_config(config, overrides, data_path=data_path, output_path=output_path)
        if budget is not None:  # checked here, like the config: a bad duration fails before anything runs
            self.config = load_config(self.config, {"budget.time": str(budget)})
        self.reporter = _reporter(verbose, reporter)
        self.callbacks = tuple(callbacks)

    def fit(self) -> Run:
        """Train, evaluate (and register, with ``registry.name``); the finished :class:`Run`."""
        import plantpheno.pipeline as pipeline

        if self.config.budget.time is not None:
            from plantpheno.budget import train_in_budget

            return Run(train_in_budget(self.config, reporter=self.reporter, callbacks=self.callbacks).run.run_dir)
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
        from plantpheno.run.listing import read_history

        return read_history(self.path)

    @property
    def summary(self) -> RunSummary:
        """What ``plantpheno runs list`` shows about the run."""
        from plantpheno.run.listing import read_run

        return read_run(self.path)

    def metrics(self, split: str = "test") -> dict[str, Any]:
        """The evaluation of one split (``eval/SPLIT/metrics.json``): the task's metrics, ``headline_metric``,
        its bootstrap ``confidence_interval``, the number of images, the checkpoint's epoch and, with an OOD
        detector, ``unknowns``. ``split`` may also name an evaluation on another source (``evaluate(run, data=...,
        name=NAME)``: ``eval/NAME/``)."""
        from plantpheno.records.evaluation import read_evaluation

        name = check_eval_name(split)
        path = RunDir(self.path).eval(name).metrics
        if not path.is_file():
            how = (f"plantpheno.evaluate(run, split={name!r})" if name in SPLITS
                   else f"plantpheno.evaluate(run, data=..., name={name!r})")
            found = sorted(p.parent.name for p in path.parent.parent.glob("*/metrics.json"))
            what = f"no evaluation on the {name} split" if name in SPLITS else f"no evaluation named {name!r}"
            raise RunDirError(f"{self.path} has {what} ({path} is missing; the run has "
                              f"{', '.join(found) or 'none'}); run {how} first")
        return read_evaluation(path).to_dict()

    @property
    def best_checkpoint(self) -> Path | None:
        """The checkpoint that evaluation, registration and prediction use (the best, else the last)."""
        return RunDir(self.path).checkpoint_to_use()

    def evaluate(self, split: Literal["train", "val", "test"] | None = None, **options: Any) -> dict[str, Any]:
        """:func:`evaluate` on this run."""
        return evaluate(self, split=split, **options)

    def register(self, name: str, *, alias: str | None = None, registry: str | None = None) -> VersionInfo:
        """:func:`~plantpheno.api.models.register_model` of this run."""
        from plantpheno.api.models import register_model

        return register_model(self, name, alias=alias, registry=registry)

    def load_model(self, *, device: str = "cpu") -> Model:
        """This run's best checkpoint, ready to predict (as ``plantpheno predict RUN_DIR``)."""
        from plantpheno.api.models import load_model

        return load_model(self, device=device)

    def suggest(self, *, pool: str | os.PathLike[str], budget: int, **options: Any) -> Any:
        """:func:`~plantpheno.api.suggest.suggest` with this run: which images of ``pool`` to label next."""
        from plantpheno.api.suggest import suggest

        return suggest(self, pool=pool, budget=budget, **options)

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
