"""A training run's tracking from start to end: open (or re-open) tracker runs with params and lineage
tags, and at the end log the final evaluation and the run's files as artifacts."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plantpheno.config import Config, config_to_dict
from plantpheno.rundir import CHECKPOINTS, ENVIRONMENT_FILE, EVAL_DIR, read_status, write_status
from plantpheno.tracking import flatten
from plantpheno.tracking.session import TrackerSet, build_trackers
from plantpheno.training.callbacks import BEST

if TYPE_CHECKING:
    from plantpheno.data.datasets import PreparedData
    from plantpheno.training.tasks import Task

def open_run_tracking(config: Config, run_dir: Path, *, prepared: PreparedData, task: Task,
                      resuming: bool) -> TrackerSet:
    """Start (or re-open, on resume) every tracker run; new runs log params and lineage tags."""
    trackers = build_trackers(config, run_dir)
    previous = read_status(run_dir).get("tracking") if resuming else None
    ids = trackers.start(run_name=run_dir.name, resume_ids=previous)
    write_status(run_dir, "starting", tracking={**(previous or {}), **ids})
    if not resuming:
        params = flatten(config_to_dict(config))
        params.update({f"data.num_{k}": str(len(v)) for k, v in prepared.splits.items()})
        params["data.num_classes"] = str(len(prepared.class_names or []))
        trackers.log_params(params)
        env = json.loads((run_dir / ENVIRONMENT_FILE).read_text(encoding="utf-8"))
        trackers.set_tags({
            "dataset_fingerprint": prepared.fingerprint, "git_commit": env["git_commit"],
            "git_dirty": env["git_dirty"], "plantpheno_version": env["plantpheno"], "torch_version": env["torch"],
            "timm_version": env["timm"], "device": env["device"], "task": task.name,
            "backbone": config.model.backbone, "run_dir": str(run_dir.resolve()),
        })
    for hint in trackers.hints():
        print(f"tracking: {hint}", file=sys.stderr)
    return trackers


_RUN_ARTIFACTS = ("config.yaml", "split.csv", "dataset.json", "environment.json", "metrics.jsonl",
                  "training_curves.png", "bad_images.csv")


def log_run_results(trackers: TrackerSet, config: Config, run_dir: Path, metrics: dict[str, Any], *, split: str,
                 step: int) -> None:
    """Final evaluation metrics (``test/accuracy`` ...) and the run's files as artifacts."""
    prefix = "test" if split == "test" else f"eval_{split}"
    final = {f"{prefix}/{k}": v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    ci = metrics.get("confidence_interval") or {}
    if ci.get("low") is not None:
        final[f"{prefix}/{ci['metric']}_ci_low"], final[f"{prefix}/{ci['metric']}_ci_high"] = ci["low"], ci["high"]
    trackers.log_metrics(final, step=step)
    for name in _RUN_ARTIFACTS:
        trackers.log_artifact(run_dir / name, folder="run")
    for path in sorted((run_dir / EVAL_DIR / split).iterdir()):
        trackers.log_artifact(path, folder=f"{EVAL_DIR}/{split}")
    if config.tracking.log_checkpoint:
        trackers.log_artifact(run_dir / CHECKPOINTS / BEST, folder=CHECKPOINTS)
