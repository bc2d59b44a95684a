"""What one training job shares: the data, task, network, loaders and device every phase, the evaluation and the
trackers use, built once (:func:`plantpheno.pipeline._setup`) the same way for a new run, a resumed run and an
evaluation, and never rebound afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from plantpheno.config import Config, DataConfig
from plantpheno.data.band_loaders import build_band_loaders
from plantpheno.data.bands import band_meta
from plantpheno.data.datasets import Loaders, build_loaders
from plantpheno.data.doctor.findings import DataCheckReport
from plantpheno.data.prepared import PreparedData, write_data_files
from plantpheno.distributed import DistContext
from plantpheno.errors import StorageError
from plantpheno.records.model_meta import ModelMeta, build_model_meta
from plantpheno.reporting import Reporter
from plantpheno.run.folder import create_run_dir
from plantpheno.tracking.lifecycle import open_run_tracking
from plantpheno.tracking.session import SystemMonitor, TrackerSet
from plantpheno.training.bn_stats import apply_bn_stats
from plantpheno.training.callbacks import ReplicaCheck, TrackerCallback
from plantpheno.training.objectives import Classification, Regression
from plantpheno.training.optim import effective_lr
from plantpheno.training.outcome import what_is_safe, write_end_status
from plantpheno.training.phases import FrozenFeatures, Phase
from plantpheno.version import __version__

if TYPE_CHECKING:
    from plantpheno.run.folder import RunDir
    from plantpheno.training.feature_store import FeatureStore


@dataclass(frozen=True)
class TrainingJob:
    """One job's parts (frozen: a helper cannot swap the model or the loaders under the others)."""

    config: Config
    prepared: PreparedData
    task: Classification | Regression
    model: nn.Module  # the whole network
    loaders: Loaders
    device: torch.device
    meta: ModelMeta  # what checkpoints record to rebuild the model and its preprocessing
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


def job_loaders(prepared: PreparedData, data: DataConfig, *, seed: int, output_dir: Path, mean: Sequence[float],
                std: Sequence[float], device: torch.device, dist: DistContext, splits: Sequence[str],
                reporter: Reporter | None) -> Loaders:
    """The job's loaders: with ``data.bands``, float N-band images scaled by the training split's band statistics;
    otherwise the RGB image loaders."""
    shard = {"pin_memory": device.type == "cuda", "rank": dist.rank, "world": dist.world_size, "splits": splits}
    if prepared.band_norm is not None:
        return build_band_loaders(prepared, data, seed=seed, norm=prepared.band_norm, output_dir=output_dir,
                                  reporter=reporter, **shard)
    return build_loaders(prepared, data, seed=seed, output_dir=output_dir, mean=mean, std=std,
                         device_type=device.type, reporter=reporter, **shard)


def job_network(model: nn.Module, config: Config, prepared: PreparedData, loaders: Loaders, *, mean: Sequence[float],
                std: Sequence[float], device: torch.device, new_run: bool, reporter: Reporter | None,
                store: FeatureStore | None) -> tuple[nn.Module, FrozenFeatures | None]:
    """The network on ``device``, its BatchNorm statistics re-estimated on the training images where
    ``model.bn_stats`` asks (a new run only, before any cached pass), and with ``training.feature_cache`` the
    phases' cached inputs."""
    model = apply_bn_stats(model.to(device), config.model, config.data, prepared, loaders, device=device,
                           new_run=new_run, reporter=reporter)
    features = (FrozenFeatures(model, prepared, loaders, config, mean=mean, std=std, device=device,
                               reporter=reporter, store=store) if config.training.feature_cache else None)
    return model, features


def job_meta(prepared: PreparedData, data: DataConfig, *, backbone: str, task: Classification | Regression,
             model: nn.Module, mean: Sequence[float], std: Sequence[float], parent: dict[str, Any] | None) -> ModelMeta:
    """What the job's checkpoints record to rebuild the model and its preprocessing (bands and lineage included)."""
    return build_model_meta(task=task.to_meta(), backbone=backbone, image_size=data.image_size, resize=data.resize,
                            mean=tuple(mean), std=tuple(std),
                            dataset_fingerprint=prepared.fingerprint, plantpheno_version=__version__,
                            bands=band_meta(data.bands, prepared.band_norm,
                                            getattr(model, "plantpheno_input_adapter", None)),
                            parent_model=parent)


def new_run_dir(job: TrainingJob, held: contextlib.ExitStack, checked: DataCheckReport | None = None) -> RunDir:
    """Create the run folder (its lock released when ``held`` closes) and write the config, the data files, the
    data-check report and the environment; a failure there is recorded in the run's status."""
    run, lock = create_run_dir(job.config.output_dir, job.config.experiment, job.config.run_name)
    held.callback(lock.release)
    try:
        run.write_config(job.config)
        write_data_files(job.prepared, run)
        if checked is not None:
            checked.write(run.data_check)
        run.write_environment(str(job.device))
    except BaseException as exc:
        recorded = write_end_status(run, "failed", reason=str(exc) or type(exc).__name__)
        if isinstance(exc, StorageError):
            raise StorageError(f"{exc}. {what_is_safe(run, recorded)}") from None
        raise
    return run
