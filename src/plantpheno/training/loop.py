"""The training loop. Features (checkpoints, early stopping, logging, progress) are callbacks.

Everything that determines the next step lives in :class:`TrainState` plus the model, optimizer,
scheduler, scaler and RNG state, so a run resumed from a checkpoint (even one written half-way
through an epoch) continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from plantpheno.data.datasets import Loaders
from plantpheno.device import release_freed_memory
from plantpheno.distributed import DistContext
from plantpheno.errors import TrainingError
from plantpheno.evaluation.inference import Predictions, predict
from plantpheno.models import set_train_mode
from plantpheno.training.objectives import Task


@dataclass
class TrainState:
    """Loop position and callback state; saved in every checkpoint."""

    epoch: int = 0  # completed epochs
    batch: int = 0  # batches completed in the current epoch (non-zero only after an interruption)
    global_step: int = 0
    partial: dict[str, float] = field(default_factory=lambda: {"loss": 0.0, "score": 0.0, "seen": 0.0, "time": 0.0})
    best_value: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    world_size: int = 1  # processes that shared `batch` (a mid-epoch position is per rank)
    phase: str = "train"  # the training phase the loop is in (plantpheno.training.phases)
    phase_start: int = 0  # the epoch that phase began at

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> TrainState:
        """A state saved by :meth:`to_dict` (also by earlier versions, which marked the fine-tune phase with
        ``fine_tune_from``)."""
        saved = {"world_size": 1, **saved}
        fine_tune_from = saved.pop("fine_tune_from", None)
        if fine_tune_from is not None:
            saved.update(phase="fine_tune", phase_start=fine_tune_from)
        return cls(**saved)


@dataclass
class Networks:
    """The model handles of one training phase, named by what each holds.

    ``trained`` is the network the loop runs on the loaders' inputs: the whole model, or, with the feature
    cache, only the part after the cache (the head, or the blocks after a cut). ``stepped`` is what the
    optimizer steps through: ``trained`` itself, or its DistributedDataParallel / ``torch.compile`` wrapper.
    ``whole`` is the complete network, whose ``state_dict`` checkpoints hold and evaluation runs."""

    trained: nn.Module
    stepped: nn.Module | None = None
    whole: nn.Module | None = None

    def __post_init__(self) -> None:
        # `is None`, not `or`: compiled modules refuse len()
        self.stepped = self.trained if self.stepped is None else self.stepped
        self.whole = self.trained if self.whole is None else self.whole


@dataclass
class Optimization:
    """How a step updates the weights: optimizer, schedule, gradient scaling, mixed precision, clipping."""

    optimizer: torch.optim.Optimizer
    scheduler: Any = None
    step_scheduler_per_batch: bool = False
    scaler: torch.amp.GradScaler | None = None
    amp_dtype: torch.dtype | None = None
    grad_clip_norm: float | None = None

    def __post_init__(self) -> None:
        if self.scaler is None:
            self.scaler = torch.amp.GradScaler("cpu", enabled=False)


class Callback(Protocol):
    """Any subset of these methods; the trainer calls those an object has.

    ``on_batch_end`` gets each step's loss as a number once the trainer has read it back from the device: after
    every step on the CPU, in order for the steps since the last check on a GPU (``training.check_every``)."""

    def on_fit_start(self, trainer: TrainingLoop) -> None: ...
    def on_epoch_start(self, trainer: TrainingLoop) -> None: ...
    def on_batch_end(self, trainer: TrainingLoop, loss: float, images: int) -> None: ...
    def on_epoch_end(self, trainer: TrainingLoop, metrics: dict[str, float]) -> None: ...
    def on_interrupt(self, trainer: TrainingLoop) -> None: ...
    def on_fit_end(self, trainer: TrainingLoop) -> None: ...


class NonFiniteLossError(TrainingError):
    def __init__(self, value: float, epoch: int, batch: int) -> None:
        self.value, self.epoch, self.batch = value, epoch, batch
        super().__init__(f"training loss became {value} at epoch {epoch}, batch {batch}")


class EarlyExit(Exception):
    """Raised by a callback to end a run early on purpose (e.g. a pruned tuning trial).

    The pipeline records ``status`` in ``run.json``, closes tracker runs as interrupted and re-raises;
    ``checkpoints/last.pt`` holds the last completed epoch.
    """

    status = "stopped"


class Interrupted(Exception):
    """Raised after a stop request (SIGINT/SIGTERM) once ``last`` has been saved."""

    def __init__(self, reason: str, state: TrainState) -> None:
        self.reason, self.state = reason, state
        self.run_dir = None  # filled in by the pipeline, for the resume hint
        super().__init__(reason)


class TrainingLoop:
    """Fits ``nets.trained`` on ``loaders["train"]``, validating on ``loaders["val"]`` after every epoch."""

    def __init__(self, *, nets: Networks, task: Task, loss_fn: nn.Module, optimization: Optimization,
                 loaders: Loaders, device: torch.device, epochs: int, monitor: tuple[str, str],
                 callbacks: Sequence[object] = (), state: TrainState | None = None,
                 dist: DistContext | None = None, channels_last: bool = False, check_every: int = 1,
                 release_memory: bool = False) -> None:
        self.nets, self.task, self.loss_fn = nets, task, loss_fn.to(device)
        self.release_memory = release_memory  # hand freed host memory back to the OS at the start and after each epoch
        self.check_every = check_every  # steps between reads of the loss from the device (see _check)
        self._pending: list[tuple[torch.Tensor, torch.Tensor, int]] = []  # (loss, score, images) not yet read
        self.optimization = optimization
        self.dist = dist or DistContext()
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.loaders, self.device, self.epochs, self.monitor = loaders, device, epochs, monitor
        self.callbacks = list(callbacks)
        self.state = state or TrainState()
        self.should_stop = False  # set by callbacks (early stopping)
        self.stop_requested: str | None = None  # set by signal handlers or tests: stop after this batch
        self._stop_now = False  # the stop decision all ranks agreed on at the last step

    @property
    def model(self) -> nn.Module:
        """The network trained on the loaders' inputs (``nets.trained``)."""
        return self.nets.trained

    def _emit(self, event: str, *args: Any) -> None:
        for cb in self.callbacks:
            method = getattr(cb, event, None)
            if method is not None:
                method(self, *args)

    def fit(self) -> TrainState:
        """Train until ``epochs`` are done or a callback asks to stop."""
        if self.release_memory:  # before the loader workers are forked: they would inherit the freed pages
            release_freed_memory()
        self._emit("on_fit_start")
        while self.state.epoch < self.epochs and not self.should_stop:
            if self.state.batch == 0:  # the rate this epoch starts with (kept across a mid-epoch resume)
                self.state.partial["lr"] = self.optimization.optimizer.param_groups[0]["lr"]
            lr = self.state.partial["lr"]
            train_metrics = self.train_epoch()
            val_metrics = {f"val/{k}": v for k, v in self.validate("val").items()}
            metrics = {"epoch": self.state.epoch + 1, "lr": lr,
                       **train_metrics, **val_metrics}
            self._step_epoch_scheduler(metrics)
            self.state.epoch += 1
            self.state.batch = 0
            self.state.partial = {"loss": 0.0, "score": 0.0, "seen": 0.0, "time": 0.0}
            if self.release_memory:  # before the callbacks, so the memory they record is what the run holds
                release_freed_memory()
            self._emit("on_epoch_end", metrics)
            if self.dist.any([bool(self.stop_requested)], self.device)[0]:
                raise Interrupted(self.stop_requested or "a stop request on another rank", self.state)
        self._emit("on_fit_end")
        return self.state

    def train_epoch(self) -> dict[str, float]:
        loader, state = self.loaders["train"], self.state
        loader.sampler.set_epoch(state.epoch, start=state.batch * loader.batch_size * self.dist.world_size)
        set_train_mode(self.nets.trained, True)
        self._emit("on_epoch_start")
        self._tick = time.perf_counter()
        # the loaders' finishing step normalises (or augments) uint8 batches on the device
        for images, target in self.loaders.on_device("train", self.device, memory_format=self.memory_format):
            loss, outputs = self._train_step(images, target)
            self._pending.append((loss.detach(), self.task.batch_score(outputs.detach(), target), len(target)))
            state.batch += 1
            state.global_step += 1
            # a process alone checks at once when asked to stop; ranks of a job check at the same steps
            if len(self._pending) >= self.check_every or (not self.dist.enabled and self.stop_requested):
                self._check()
            if self._stop_now or (not self.dist.enabled and self.stop_requested):
                self._emit("on_interrupt")
                raise Interrupted(self.stop_requested or "a stop request on another rank", state)
        self._check()
        acc = state.partial
        loss_sum, score, seen = self.dist.sum([acc["loss"], acc["score"], acc["seen"]], self.device)
        seen = max(seen, 1.0)
        return {"train/loss": loss_sum / seen, f"train/{self.task.train_metric}": score / seen,
                "time/epoch_s": acc["time"], "time/images_per_s": seen / max(acc["time"], 1e-9)}

    def _check(self) -> None:
        """Read the losses and scores of the steps since the last check back from the device (one wait for it),
        stop on a non-finite loss, add them to the epoch's running sums and tell the callbacks.

        The steps in between queue their work without waiting, so a GPU never idles on the host; on the CPU the
        trainer checks every step (``check_every`` 1), where reading a value costs nothing. A non-finite loss is
        reported with the epoch and batch where it appeared; the steps after it changed only the weights in
        memory, and the trainer checks before any checkpoint is written (at the epoch's end and on a stop).
        Across ranks, a NaN or a stop request on any of them stops all at the same check."""
        pending, self._pending = self._pending, []
        losses = torch.stack([p[0] for p in pending]).tolist() if pending else []
        scores = torch.stack([p[1] for p in pending]).tolist() if pending else []
        bad = next((i for i, v in enumerate(losses) if not math.isfinite(v)), None)
        nonfinite, self._stop_now = self.dist.any([bad is not None, bool(self.stop_requested)], self.device)
        state = self.state
        if nonfinite:
            if bad is None:  # another rank's
                raise NonFiniteLossError(float("nan"), state.epoch + 1, state.batch)
            raise NonFiniteLossError(losses[bad], state.epoch + 1, state.batch - len(pending) + bad + 1)
        acc = state.partial
        now = time.perf_counter()
        acc["time"] += now - self._tick  # wall time including data loading
        self._tick = now
        for loss, score, (_, _, n) in zip(losses, scores, pending):
            acc["loss"] += loss * n
            acc["score"] += score
            acc["seen"] += n
            self._emit("on_batch_end", loss, n)

    def _train_step(self, images: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step; returns the loss and the outputs, on the device (nothing is read back here)."""
        opt = self.optimization
        autocast = (torch.autocast(self.device.type, dtype=opt.amp_dtype) if opt.amp_dtype
                    else contextlib.nullcontext())
        with autocast:
            outputs = self.nets.stepped(images)
            loss = self.loss_fn(outputs.float(), self.task.loss_target(target))
        opt.optimizer.zero_grad(set_to_none=True)
        opt.scaler.scale(loss).backward()
        if opt.grad_clip_norm is not None:
            opt.scaler.unscale_(opt.optimizer)
            nn.utils.clip_grad_norm_(self.nets.trained.parameters(), opt.grad_clip_norm)
        opt.scaler.step(opt.optimizer)
        opt.scaler.update()
        if opt.step_scheduler_per_batch and opt.scheduler is not None:
            opt.scheduler.step()
        return loss, outputs

    def validate(self, split: str = "val") -> dict[str, float]:
        """Loss and task metrics over the whole split."""
        loader = self.loaders[split]
        loader.sampler.set_epoch(0)
        self.dist.sync_buffers(self.nets.trained)
        p = predict(self.nets.trained, loader, task=self.task, device=self.device, loss_fn=self.loss_fn,
                    amp_dtype=self.optimization.amp_dtype, finish=self.loaders.finish)
        if self.dist.enabled:  # each rank saw a shard: gather them, so every rank computes full-set metrics
            shards = self.dist.all_gather((p.targets, p.outputs, (p.loss or 0.0) * len(p.targets)))
            targets = np.concatenate([t for t, _, _ in shards])
            outputs = np.concatenate([o for _, o, _ in shards])
            p = Predictions(targets, outputs, sum(loss for _, _, loss in shards) / max(len(targets), 1))
        if not np.isfinite(p.outputs).all():
            raise TrainingError(f"the model's outputs on the {split} split became non-finite (NaN/inf) after "
                                f"epoch {self.state.epoch + 1}; lower training.learning_rate")
        return {"loss": float(p.loss), **self.task.metrics(p.targets, p.outputs)}

    def _step_epoch_scheduler(self, metrics: dict[str, float]) -> None:
        scheduler = self.optimization.scheduler
        if scheduler is None or self.optimization.step_scheduler_per_batch:
            return
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(metrics[self.monitor[0]])
        else:
            scheduler.step()
