"""Hyperparameter search with Optuna: a search space over config fields, and a study driver.

    plantpheno tune CONFIG SPACE [key=value ...] [--sampler grid|random|tpe] [--pruner median|hyperband|none]
        [--trials N] [--timeout S] [--metric val/macro_f1] [--direction maximize] [--study NAME]
        [--storage URL] [--workers K] [--dry-run]

SPACE is a YAML file with a ``space:`` section (dotted config field -> ``{type: float, low, high,
log?, step?}``, ``{type: int, low, high, step?, log?}``, ``{type: categorical, choices: [...]}`` or a
plain list of values) and an optional ``tuning:`` section holding the same settings as the flags
(:class:`TuneSettings`; flags win). See the recipe ``tune/demo_space``. The space is checked
before anything runs: every field must exist, and its extreme values and every choice must pass the
training schema.

Each trial is a full ``pipeline.train`` run of CONFIG with the trial's values, in
``OUTPUT_DIR/<experiment>/<study>/trial-NNNN``, tracked as a child of the study's MLflow run (when
mlflow is a backend) and in W&B group ``<study>``. Its objective is the best value of the metric
over its epochs (default ``training.monitor``); every epoch's value goes to the pruner. Pruned
trials are PRUNED, failing trials FAIL with ``user_attrs["error"]``; neither stops the study. A trial never touches the test split: its
final evaluation is on validation (``eval/val/``, with the trivial baseline's verdict) and it registers no
model; the test split is evaluated once, by the run trained from ``best_config.yaml``.

The study (default storage: the journal file ``<study folder>/study.log``) holds exactly N trials
in a queue that any number of workers share: ``--workers K`` on one machine, or the same command on
several machines with a shared ``--storage`` (a journal file on a shared file system, or a
database URL). Re-running the command continues the study; trials whose worker died are failed
and run again (:mod:`plantpheno.tuning.queue`). The study folder gets ``trials.csv``,
``best.json`` (with the best trial against the trivial baseline on validation: a best trial that does not
clearly beat it is called out), ``best_config.yaml`` (train it with ``plantpheno train``) and PNG plots (a
capped grid is a seeded sample covering every value; parameter importance needs 10 complete trials and 2
varied parameters, else it is left out with the reason).

``tune(config, space, settings=...)`` is the same from Python. Importing this package does not
import optuna or torch: :func:`tune` and :func:`run_worker` load them when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from plantpheno.errors import TuningError
from plantpheno.tuning.plan import StudyPlan, describe_plan, make_plan
from plantpheno.tuning.settings import TuneSettings, load_tuning_file, merge_settings
from plantpheno.tuning.space import SearchSpace, check_space, parse_space

if TYPE_CHECKING:
    from plantpheno.tuning.report import TuneResult

__all__ = ["SearchSpace", "StudyPlan", "TuneResult", "TuneSettings", "TuningError", "check_space", "describe_plan",
           "load_tuning_file", "make_plan", "merge_settings", "parse_space", "run_worker", "tune"]


def __getattr__(name: str) -> Any:
    if name == "TuneResult":  # lives with the reports, which need optuna
        from plantpheno.tuning.report import TuneResult

        return TuneResult
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def tune(*args: Any, **kwargs: Any) -> TuneResult:
    """See :func:`plantpheno.tuning.study.tune` (imported on first use: it needs optuna)."""
    from plantpheno.tuning.study import tune as _tune

    return _tune(*args, **kwargs)


def run_worker(*args: Any, **kwargs: Any) -> Any:
    """See :func:`plantpheno.tuning.worker.run_worker` (imported on first use: it needs optuna and torch)."""
    from plantpheno.tuning.worker import run_worker as _run_worker

    return _run_worker(*args, **kwargs)
