"""MLflow through the explicit ``MlflowClient`` and a run id (no global "active run" state)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path

from plantpheno.config import MlflowConfig

_STATUS = {"completed": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
_MAX_PARAM = 6000  # MLflow's limit on a param value's length


def quiet_mlflow() -> None:
    """Keep MLflow's INFO lines ("Creating initial MLflow database tables", "Created version '1' of model ...") and
    its artifact upload/download progress bars out of plantpheno's output, which says itself what happened.

    MLflow sets its logger to INFO when it is imported, so this imports it first; a user's own
    ``$MLFLOW_LOGGING_LEVEL`` or ``$MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR`` wins."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow  # noqa: F401 - configures its logger on import; the level below must come after

    if not os.environ.get("MLFLOW_LOGGING_LEVEL"):
        logger = logging.getLogger("mlflow")
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))


def default_uri(output_dir: Path) -> str:
    """The embedded store: a sqlite file under the output folder."""
    return f"sqlite:///{(output_dir / 'mlflow.db').resolve()}"


def tracking_uri(settings: MlflowConfig, output_dir: Path) -> str:
    """``tracking.mlflow.uri``, else MLflow's own ``$MLFLOW_TRACKING_URI``, else the embedded store."""
    return settings.uri or os.environ.get("MLFLOW_TRACKING_URI", "").strip() or default_uri(output_dir)


class MlflowTracker:
    """A run in an MLflow experiment; by default a local sqlite store with artifacts beside it."""

    name = "mlflow"

    def __init__(self, settings: MlflowConfig, *, experiment: str, output_dir: Path) -> None:
        quiet_mlflow()
        from mlflow import MlflowClient

        self.uri = tracking_uri(settings, output_dir)
        # a remote server decides where artifacts go; the embedded store keeps them next to it
        embedded = self.uri == default_uri(output_dir)
        self.artifact_location = (output_dir / "mlartifacts").resolve().as_uri() if embedded else None
        self.experiment = settings.experiment or experiment
        self.parent_run_id = settings.parent_run_id
        self.client = MlflowClient(tracking_uri=self.uri)
        self.run_id: str | None = None

    @property
    def ui_hint(self) -> str:
        return f"mlflow ui --backend-store-uri {self.uri}"

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(self.experiment, artifact_location=self.artifact_location)
        except MlflowException:  # another process created it between our two calls
            return self.client.get_experiment_by_name(self.experiment).experiment_id

    def start(self, *, run_name: str, resume_id: str | None) -> str | None:
        if resume_id is not None:
            self.client.update_run(resume_id, status="RUNNING")
            self.run_id = resume_id
        else:
            tags = {"mlflow.parentRunId": self.parent_run_id} if self.parent_run_id else None
            self.run_id = self.client.create_run(self._experiment_id(), run_name=run_name, tags=tags).info.run_id
        return self.run_id

    def log_params(self, params: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:_MAX_PARAM]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow accepts at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def log_metrics(self, metrics: Mapping[str, float], *, step: int, axis: str = "epoch") -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i:i + 1000])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: Path, *, folder: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path=folder)

    def finish(self, status: str) -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, status=_STATUS[status])
