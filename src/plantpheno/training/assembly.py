"""Trainer assembly: the phases of a job, each a :class:`~plantpheno.training.loop.TrainingLoop` built from the
job's parts (loss, optimizer, schedule, mixed precision, DDP, the built-in callbacks) and, when resuming, the
checkpoint's state. :func:`train_phases` is the one entry point; the pipeline calls it between opening the run's
trackers and evaluating."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from plantpheno.device import amp_dtype, check_every
from plantpheno.models import input_format
from plantpheno.distributed import DistContext
from plantpheno.run.folder import RunDir
from plantpheno.training.callbacks import (
    Checkpointer,
    Console,
    EarlyStopping,
    MetricsLog,
    ReplicaCheck,
    TrackerCallback,
)
from plantpheno.training.checkpoint import restore_rng
from plantpheno.training.features import CachedHead
from plantpheno.training.job import TrainingJob
from plantpheno.training.losses import build_loss
from plantpheno.training.loop import Networks, Optimization, TrainingLoop, TrainState
from plantpheno.training.optim import build_optimizer, build_scheduler, steps_per_batch
from plantpheno.training.phases import Phase, enter


def train_phases(job: TrainingJob, run: RunDir, *, checkpoint: dict[str, Any] | None, tracking: TrackerCallback,
                 callbacks: Sequence[object], replicas: ReplicaCheck | None, handle_signals: bool) -> TrainState:
    """Run the planned phases in order; a resumed run continues in the phase its checkpoint was written in.

    Callbacks run in this order: tracking (first, so a pruned trial's last epoch is still tracked), the
    built-in ones (:func:`_builtin`), then the caller's."""
    world = job.dist.world_size
    state = resumed_state(checkpoint["state"], world) if checkpoint is not None else TrainState(world_size=world)
    names = [p.name for p in job.phases]
    for phase in job.phases[names.index(state.phase):]:
        if phase.name != state.phase:  # a new phase: its own count of epochs without improvement
            state.phase, state.phase_start, state.bad_epochs = phase.name, state.epoch, 0
        trainer = _build_trainer(job, phase, state, checkpoint,
                                 [tracking, *_builtin(job, run, replicas, phase), *callbacks])
        if phase.name == "fine_tune" and checkpoint is None and job.dist.is_main:
            _announce_fine_tune(job, state.best_epoch)
        state = _fit(trainer, run, handle_signals=handle_signals)
        # the next phase starts from the best weights, which rank 0 restored; a new DDP wrapper broadcasts
        # rank 0's parameters and buffers to the other ranks when it is built
        checkpoint = None
    return state


def _announce_fine_tune(job: TrainingJob, best_epoch: int | None) -> None:
    ft = job.config.training.fine_tune
    warmup = f" after {ft.warmup_epochs:g} warmup epoch(s)" if ft.warmup_epochs else ""
    job.reporter.info(f"fine-tune phase: the last {ft.blocks} backbone block(s) unfrozen for {ft.epochs} "
                      f"epoch(s) at learning rate {ft.learning_rate:g}{warmup}, from the best head (epoch "
                      f"{best_epoch}); the training loss may jump in its first epoch while the "
                      f"unfrozen blocks adapt, and the best checkpoint stays the best of both phases")


def _builtin(job: TrainingJob, run: RunDir, replicas: ReplicaCheck | None, phase: Phase) -> list[object]:
    """The callbacks of every phase: replica check (distributed), early stopping, and on rank 0 the files and
    the console."""
    patience = job.config.training.early_stopping
    later = [p.name for p in job.phases[[p.name for p in job.phases].index(phase.name) + 1:]]
    what = {"train": "the head phase" if later else "training", "fine_tune": "the fine-tune phase"}[phase.name]
    then = "; the fine-tune phase starts from it" if "fine_tune" in later else ""
    builtin: list[object] = [EarlyStopping(patience=patience.patience, min_delta=patience.min_delta, phase=what,
                                           then=then, reporter=job.main_reporter,
                                           keep_last=job.config.training.keep == "last")]
    if replicas is not None:
        builtin.insert(0, replicas)
    if job.dist.is_main:  # only rank 0 writes files and prints
        builtin += [Checkpointer(run, meta=job.meta), MetricsLog(run.metrics_log, reporter=job.reporter),
                    Console(job.reporter, progress_bar=job.config.training.progress_bar)]
    return builtin


def _build_trainer(job: TrainingJob, phase: Phase, state: TrainState, checkpoint: dict[str, Any] | None,
                   callbacks: Sequence[object]) -> TrainingLoop:
    """The trainer of one phase, continuing ``state`` (restored from ``checkpoint`` when resuming)."""
    config, model, dist = job.config, job.model, job.dist
    enter(phase, model)
    settings = phase.training
    loss_fn = build_loss(config.training, task=config.task, train_targets=job.prepared.targets("train"),
                         num_classes=job.task.num_outputs)
    optimizer = build_optimizer(model, settings, world_size=dist.world_size, scale_lr=config.distributed.scale_lr)
    train_loader = job.loaders["train"]
    train_loader.sampler.set_epoch(0)  # a whole epoch's length: a resumed epoch left the sampler part-way
    scheduler = build_scheduler(optimizer, settings, steps_per_epoch=len(train_loader), monitor_mode=config.monitor[1])
    dtype = amp_dtype(config.training.mixed_precision, job.device)
    scaler = torch.amp.GradScaler(job.device.type, enabled=dtype == torch.float16)
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(checkpoint["scheduler"])
        scaler.load_state_dict(checkpoint["scaler"])
        restore_rng(checkpoint["rng"])  # last: building the model above consumed random numbers
    # the trainer sees the part after the feature cache; checkpoints hold the whole model
    loaders, net = job.features.inputs(phase) if job.features is not None else (job.loaders, model)
    # inputs follow the model's format; a head on pooled (2-D) features has none
    channels_last = input_format(net) == torch.channels_last and not isinstance(net, CachedHead)
    optimization = Optimization(optimizer, scheduler, steps_per_batch(settings), scaler, dtype,
                                config.training.grad_clip_norm)
    stepped = stepped_module(net, dist=dist, device=job.device, sync_batchnorm=config.distributed.sync_batchnorm,
                             compile=config.training.compile)
    return TrainingLoop(nets=Networks(trained=net, stepped=stepped, whole=model), task=job.task,
                        loss_fn=loss_fn, optimization=optimization, loaders=loaders, device=job.device,
                        epochs=state.phase_start + phase.epochs, monitor=config.monitor, callbacks=callbacks,
                        state=state, dist=dist, channels_last=channels_last,
                        check_every=check_every(config.training.check_every, job.device),
                        release_memory=config.training.release_memory)


def stepped_module(net: nn.Module, *, dist: DistContext, device: torch.device, sync_batchnorm: bool,
                   compile: bool) -> nn.Module:
    """What the optimizer steps through: the network, in DDP when distributed, compiled if asked."""
    module: nn.Module = net
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        if sync_batchnorm:
            module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
        on_gpu = device.type == "cuda"
        module = DistributedDataParallel(module, device_ids=[device.index] if on_gpu else None)
    if compile:
        module = torch.compile(module)
    return module


def resumed_state(saved: dict[str, Any], world_size: int) -> TrainState:
    """The saved loop state; a mid-epoch position is re-expressed for a different number of ranks."""
    state = TrainState.from_dict(saved)
    if state.world_size != world_size:
        state.batch = (state.batch * state.world_size) // world_size
        state.world_size = world_size
    return state


def _fit(trainer: TrainingLoop, run: RunDir, *, handle_signals: bool) -> TrainState:
    if trainer.dist.is_main:
        run.write_status("running")
    use_signals = handle_signals and threading.current_thread() is threading.main_thread()
    with _stop_on_signals(trainer) if use_signals else contextlib.nullcontext():
        return trainer.fit()


@contextlib.contextmanager
def _stop_on_signals(trainer: TrainingLoop) -> Iterator[None]:
    """SIGINT/SIGTERM: finish the current batch, save ``last``, stop. A second SIGINT stops at once."""

    def handler(signum: int, frame: Any) -> None:
        if trainer.stop_requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        trainer.stop_requested = signal.Signals(signum).name

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
