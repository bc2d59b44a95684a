"""Weights & Biases: project/entity/mode from the config; offline mode needs no network."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from plantpheno.config import WandbConfig

_EXIT_CODE = {"completed": 0, "failed": 1, "interrupted": 130}


class WandbTracker:
    """A W&B run whose files live in the run directory (``RUN_DIR/wandb``)."""

    name = "wandb"

    def __init__(self, settings: WandbConfig, *, group: str, folder: Path) -> None:
        import wandb  # noqa: F401 - fail at set-up, not mid-run, when W&B is not installed

        self.settings, self.group = settings, group
        self.run_dir = folder  # W&B makes its own `wandb` folder inside
        self.run = None

    def start(self, *, run_name: str, resume_id: str | None) -> str | None:
        import wandb
        from wandb.sdk.lib.runid import generate_id

        run_id = resume_id or generate_id()
        self.run = wandb.init(
            project=self.settings.project, entity=self.settings.entity, mode=self.settings.mode,
            dir=str(self.run_dir), name=run_name, id=run_id, group=self.group, resume="allow",
            reinit="create_new",
            # our own sampler logs system metrics; W&B's console capture would duplicate the log
            settings=wandb.Settings(console="off", x_disable_stats=True, silent=True),
        )
        # epoch metrics and per-step system metrics have separate x-axes (W&B steps must not go back)
        self.run.define_metric("epoch")
        self.run.define_metric("global_step")
        self.run.define_metric("system/*", step_metric="global_step")
        for prefix in ("train/*", "val/*", "test/*", "time/*", "lr"):
            self.run.define_metric(prefix, step_metric="epoch")
        return run_id

    def log_params(self, params: Mapping[str, str]) -> None:
        self.run.config.update(dict(params), allow_val_change=True)

    def log_metrics(self, metrics: Mapping[str, float], *, step: int, axis: str = "epoch") -> None:
        self.run.log({**metrics, ("epoch" if axis == "epoch" else "global_step"): step})

    def set_tags(self, tags: Mapping[str, str]) -> None:
        # W&B tags are labels, not key/value pairs: keep pairs in the config, labels for quick filters
        self.run.config.update({f"tag/{k}": v for k, v in tags.items()}, allow_val_change=True)

    def log_artifact(self, path: Path, *, folder: str | None = None) -> None:
        import wandb

        if path.suffix == ".png":
            self.run.log({f"{folder or 'files'}/{path.stem}": wandb.Image(str(path))})
        kind = "model" if path.suffix == ".pt" else "run-files"
        artifact = wandb.Artifact(f"{self.run.id}-{(folder or 'files').replace('/', '-')}-{path.stem}", type=kind)
        artifact.add_file(str(path))
        self.run.log_artifact(artifact)

    def finish(self, status: str) -> None:
        if self.run is not None:
            self.run.finish(exit_code=_EXIT_CODE[status])
            self.run = None
