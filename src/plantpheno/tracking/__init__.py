"""Experiment tracking behind one small interface.

Every run writes a plain local log (``RUN_DIR/tracking/``); ``tracking.backends`` adds MLflow, Weights &
Biases and/or TensorBoard. Each backend lives in its own module and imports its library only when
used, so ``import plantpheno`` stays light and a missing library only matters if it is asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal, Protocol

from plantpheno.config import Config, flatten_dict
from plantpheno.run.folder import RunDir

RunStatus = Literal["completed", "failed", "interrupted"]
Axis = Literal["epoch", "step"]


class Tracker(Protocol):
    """One experiment-tracking backend. Methods may raise; :class:`TrackerSet` contains failures."""

    name: str

    def start(self, *, run_name: str, resume_id: str | None) -> str | None:
        """Open (or, given ``resume_id``, re-open) the backend's run; return its id for resuming."""
        ...

    def log_params(self, params: Mapping[str, str]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], *, step: int, axis: Axis = "epoch") -> None:
        """``axis`` says what ``step`` counts: epochs (train/val/test metrics) or optimizer steps (system)."""
        ...

    def set_tags(self, tags: Mapping[str, str]) -> None: ...

    def log_artifact(self, path: Path, *, folder: str | None = None) -> None: ...

    def finish(self, status: RunStatus) -> None: ...


def _local(config: Config, run: RunDir) -> Tracker:
    from plantpheno.tracking.local import LocalTracker

    return LocalTracker(folder=run.tracking)


def _mlflow(config: Config, run: RunDir) -> Tracker:
    from plantpheno.tracking.mlflow_backend import MlflowTracker

    return MlflowTracker(config.tracking.mlflow, experiment=config.experiment, output_dir=config.output_dir)


def _wandb(config: Config, run: RunDir) -> Tracker:
    from plantpheno.tracking.wandb_backend import WandbTracker

    return WandbTracker(config.tracking.wandb, group=config.tracking.wandb.group or config.experiment,
                        folder=run.path)


def _tensorboard(config: Config, run: RunDir) -> Tracker:
    from plantpheno.tracking.tensorboard_backend import TensorboardTracker

    return TensorboardTracker(log_dir=run.tensorboard)


# name -> factory; each backend's module (and library) is imported only when the backend is selected, and
# the factory hands it the values it needs, never the whole config
BACKENDS: dict[str, Callable[[Config, RunDir], Tracker]] = {
    "local": _local, "mlflow": _mlflow, "wandb": _wandb, "tensorboard": _tensorboard,
}


def create_tracker(name: str, config: Config, run: RunDir) -> Tracker:
    """Instantiate one backend by name (see :data:`BACKENDS`)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown tracking backend {name!r}; known: {', '.join(BACKENDS)}")
    return BACKENDS[name](config, run)


def flatten(data: Mapping[str, object]) -> dict[str, str]:
    """Nested mapping -> ``{"dotted.key": "text"}``, the form trackers store params in."""
    out: dict[str, str] = {}
    for key, value in flatten_dict(dict(data)).items():
        if isinstance(value, (list, tuple)):
            out[key] = "[" + ", ".join(str(v) for v in value) + "]"
        else:
            out[key] = "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    return out
