"""What one training job shares: the data, task, network, loaders and device every phase, the evaluation and the
trackers use, built once (:func:`plantpheno.pipeline._setup`) the same way for a new run, a resumed run and an
evaluation, and never rebound afterwards."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from plantpheno.config import Config
from plantpheno.data.datasets import Loaders
from plantpheno.data.prepared import PreparedData
from plantpheno.distributed import DistContext
from plantpheno.reporting import Reporter
from plantpheno.tracking.lifecycle import open_run_tracking
from plantpheno.tracking.session import SystemMonitor, TrackerSet
from plantpheno.training.callbacks import ReplicaCheck, TrackerCallback
from plantpheno.training.objectives import Classification, Regression
from plantpheno.training.optim import effective_lr
from plantpheno.training.phases import FrozenFeatures, Phase

if TYPE_CHECKING:
    from plantpheno.run.folder import RunDir


@dataclass(frozen=True)
class TrainingJob:
    """One job's parts (frozen: a helper cannot swap the model or the loaders under the others)."""

    config: Config
    prepared: PreparedData
    task: Classification | Regression
    model: nn.Module  # the whole network
    loaders: Loaders
    device: torch.device
    meta: dict[str, Any]  # what checkpoints record to rebuild the model and its preprocessing
    dist: DistContext
    reporter: Reporter
    phases: tuple[Phase, ...]
    features: FrozenFeatures | None  # with training.feature_cache: the phases' cached inputs

    @property
    def main_reporter(self) -> Reporter | None:
        """The reporter on rank 0, None on the other ranks (only rank 0 shows progress)."""
        return self.reporter if self.dist.is_main else None


def job_summary(job: TrainingJob, replicas: ReplicaCheck | None) -> dict[str, Any]:
    """Effective batch size and learning rate of a distributed run, and whether replicas stayed identical."""
    dist, config = job.dist, job.config
    return {"world_size": dist.world_size, "backend": dist.backend,
            "per_rank_batch_size": config.data.batch_size,
            "global_batch_size": config.data.batch_size * dist.world_size,
            "learning_rate": effective_lr(config.training.learning_rate, world_size=dist.world_size,
                                          scale_lr=config.distributed.scale_lr),
            "scale_lr": config.distributed.scale_lr,
            "replicas_identical": replicas.identical if replicas else None}


def open_job_tracking(job: TrainingJob, run: RunDir, *, resuming: bool) -> tuple[TrackerSet, TrackerCallback]:
    """The run's trackers (started, or re-opened on resume; none on ranks other than 0) and the callback that
    feeds them each epoch, with the system-metrics monitor."""
    if not job.dist.is_main:
        nothing = TrackerSet([])
        return nothing, TrackerCallback(nothing, system=None)
    prepared = job.prepared
    trackers = open_run_tracking(job.config, run, split_sizes={k: len(v) for k, v in prepared.splits.items()},
                                 num_classes=len(prepared.class_names or []), fingerprint=prepared.fingerprint,
                                 task=job.task.name, resuming=resuming, reporter=job.reporter)
    system = SystemMonitor(trackers, interval=job.config.tracking.system_metrics_interval)
    return trackers, TrackerCallback(trackers, system=system)
