"""What each task measures: its metric names, which way each is better, its default monitor and headline.

This is the one home of those facts. The config checks ``training.monitor`` against it when it is
loaded (before any run folder or cache exists), the trainer and the tuner pick their choices from it,
the evaluation reports its headline metric, run listings resolve ``monitor: auto`` with it. It imports
neither torch nor numpy, so reading runs and configs stays light; the torch side of a task (loss
targets, predictions) is :mod:`plantpheno.training.objectives`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Direction = Literal["max", "min"]
TaskName = Literal["classification", "regression"]
SPLIT_PREFIXES = ("train/", "val/", "test/")


@dataclass(frozen=True)
class TaskMetrics:
    """The metrics of one task.

    ``val_metrics`` are computed on the validation split after every epoch (besides the loss);
    ``train_metric`` is the running metric of a training epoch; ``headline`` is the evaluation's
    main figure (with a confidence interval); ``directions`` covers every metric the task reports.
    """

    name: TaskName
    val_metrics: tuple[str, ...]
    train_metric: str
    default_monitor: str
    headline: str
    directions: dict[str, Direction] = field(default_factory=dict)
    # metrics of a finished evaluation that a registry entry keeps as its summary
    summary_metrics: tuple[str, ...] = ()

    def direction(self, metric: str) -> Direction:
        """Whether larger (``max``) or smaller (``min``) is better; ``metric`` may carry a split prefix."""
        bare = _bare(metric)
        if bare == "loss":
            return "min"
        if bare not in self.directions:
            raise KeyError(f"{metric!r} is not a metric of task {self.name}")
        return self.directions[bare]

    def monitor_choices(self) -> tuple[str, ...]:
        """What ``training.monitor`` may name: the validation loss and the validation metrics."""
        return ("val/loss", *(f"val/{m}" for m in self.val_metrics))

    def objective_choices(self) -> tuple[str, ...]:
        """What a tuning study may optimise: the monitor choices plus the training loss and metric."""
        return (*self.monitor_choices(), "train/loss", f"train/{self.train_metric}")

    def resolve_monitor(self, setting: str) -> tuple[str, Direction]:
        """``training.monitor`` (``auto`` or a name) as ``(name, direction)``."""
        name = self.default_monitor if setting == "auto" else setting
        return name, self.direction(name)


def _bare(metric: str) -> str:
    for prefix in SPLIT_PREFIXES:
        if metric.startswith(prefix):
            return metric[len(prefix):]
    return metric


CLASSIFICATION = TaskMetrics(
    name="classification", val_metrics=("accuracy", "macro_f1", "weighted_f1"), train_metric="accuracy",
    default_monitor="val/macro_f1", headline="accuracy",
    directions={"accuracy": "max", "macro_f1": "max", "weighted_f1": "max", "macro_precision": "max",
                "macro_recall": "max", "balanced_accuracy": "max"},
    summary_metrics=("accuracy", "macro_f1"),
)
REGRESSION = TaskMetrics(
    name="regression", val_metrics=("mae", "rmse", "r2"), train_metric="mae", default_monitor="val/mae",
    headline="mae",
    directions={"mae": "min", "rmse": "min", "r2": "max", "abs_dic": "min", "count_accuracy": "max",
                "count_within_one": "max"},
    summary_metrics=("mae", "rmse", "r2"),
)
TASKS: dict[str, TaskMetrics] = {t.name: t for t in (CLASSIFICATION, REGRESSION)}


def task_metrics(name: str) -> TaskMetrics:
    """The metrics of task ``name`` (``classification`` or ``regression``)."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS)}") from None
