"""The training loop. Features (checkpoints, early stopping, logging, progress) are callbacks.

Everything that determines the next step lives in :class:`TrainState` plus the model, optimizer,
scheduler, scaler and RNG state, so a run resumed from a checkpoint (even one written half-way
through an epoch) continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from plantpheno.data.batch_augment import loader_augment, to_device
from plantpheno.distributed import DistContext
from plantpheno.errors import TrainingError
from plantpheno.evaluation.predict import Predictions, predict
from plantpheno.models import set_train_mode
from plantpheno.training.tasks import Task


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
    fine_tune_from: int | None = None  # the epoch the fine-tune phase began at; None = not in that phase

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Callback(Protocol):
    """Any subset of these methods; the trainer calls those an object has."""

    def on_fit_start(self, trainer: Trainer) -> None: ...
    def on_epoch_start(self, trainer: Trainer) -> None: ...
    def on_batch_end(self, trainer: Trainer, loss: float, images: int) -> None: ...
    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, float]) -> None: ...
    def on_interrupt(self, trainer: Trainer) -> None: ...
    def on_fit_end(self, trainer: Trainer) -> None: ...


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


class Trainer:
    """Fits ``model`` on ``loaders["train"]``, validating on ``loaders["val"]`` after every epoch."""

    def __init__(self, *, model: nn.Module, task: Task, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: Any, step_scheduler_per_batch: bool, scaler: torch.amp.GradScaler,
                 loaders: dict[str, DataLoader], device: torch.device, epochs: int, monitor: tuple[str, str],
                 amp_dtype: torch.dtype | None = None, grad_clip_norm: float | None = None,
                 callbacks: list[object] = (), state: TrainState | None = None,
                 dist: DistContext | None = None, train_model: nn.Module | None = None,
                 channels_last: bool = False, checkpoint_model: nn.Module | None = None) -> None:
        self.model, self.task, self.loss_fn = model, task, loss_fn.to(device)
        # `train_model` is the DistributedDataParallel wrapper when distributed; `model` is always the plain
        # network, whose state_dict (no "module." prefix) goes into checkpoints and serves evaluation.
        self.train_model = train_model if train_model is not None else model  # no `or`: compiled modules refuse len()
        # what checkpoints hold: the whole network, also when `model` is only a head on cached features
        self.checkpoint_model = checkpoint_model if checkpoint_model is not None else model
        self.dist = dist or DistContext()
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.optimizer, self.scheduler, self.scaler = optimizer, scheduler, scaler
        self.step_scheduler_per_batch = step_scheduler_per_batch
        self.loaders, self.device, self.epochs, self.monitor = loaders, device, epochs, monitor
        self.amp_dtype, self.grad_clip_norm = amp_dtype, grad_clip_norm
        self.callbacks = list(callbacks)
        self.state = state or TrainState()
        self.should_stop = False  # set by callbacks (early stopping)
        self.stop_requested: str | None = None  # set by signal handlers or tests: stop after this batch
        self._stop_now = False  # the stop decision all ranks agreed on at the last step

    def _emit(self, event: str, *args: Any) -> None:
        for cb in self.callbacks:
            method = getattr(cb, event, None)
            if method is not None:
                method(self, *args)

    def fit(self) -> TrainState:
        """Train until ``epochs`` are done or a callback asks to stop."""
        self._emit("on_fit_start")
        while self.state.epoch < self.epochs and not self.should_stop:
            if self.state.batch == 0:  # the rate this epoch starts with (kept across a mid-epoch resume)
                self.state.partial["lr"] = self.optimizer.param_groups[0]["lr"]
            lr = self.state.partial["lr"]
            train_metrics = self.train_epoch()
            val_metrics = {f"val/{k}": v for k, v in self.validate("val").items()}
            metrics = {"epoch": self.state.epoch + 1, "lr": lr,
                       **train_metrics, **val_metrics}
            self._step_epoch_scheduler(metrics)
            self.state.epoch += 1
            self.state.batch = 0
            self.state.partial = {"loss": 0.0, "score": 0.0, "seen": 0.0, "time": 0.0}
            self._emit("on_epoch_end", metrics)
            if self.dist.any([bool(self.stop_requested)], self.device)[0]:
                raise Interrupted(self.stop_requested or "a stop request on another rank", self.state)
        self._emit("on_fit_end")
        return self.state

    def train_epoch(self) -> dict[str, float]:
        loader, state = self.loaders["train"], self.state
        loader.sampler.set_epoch(state.epoch, start=state.batch * loader.batch_size * self.dist.world_size)
        set_train_mode(self.model, True)
        self._emit("on_epoch_start")
        acc = state.partial
        tick = time.perf_counter()
        augment = loader_augment(loader)  # set when the batches come as uint8 (and maybe unaugmented)
        for images, target in loader:
            images = to_device(images, self.device, augment=augment, memory_format=self.memory_format)
            target = target.to(self.device, non_blocking=True)
            loss, outputs = self._train_step(images, target)
            n = len(target)
            acc["loss"] += loss * n
            acc["score"] += self.task.batch_score(outputs.detach(), target)
            acc["seen"] += n
            now = time.perf_counter()
            acc["time"] += now - tick  # wall time including data loading
            tick = now
            state.batch += 1
            state.global_step += 1
            self._emit("on_batch_end", loss, n)
            # one process may stop as soon as asked; ranks of a job stop only at a step they agreed on
            if self._stop_now or (not self.dist.enabled and self.stop_requested):
                self._emit("on_interrupt")
                raise Interrupted(self.stop_requested or "a stop request on another rank", state)
        loss_sum, score, seen = self.dist.sum([acc["loss"], acc["score"], acc["seen"]], self.device)
        seen = max(seen, 1.0)
        return {"train/loss": loss_sum / seen, f"train/{self.task.train_metric}": score / seen,
                "time/epoch_s": acc["time"], "time/images_per_s": seen / max(acc["time"], 1e-9)}

    def _train_step(self, images: torch.Tensor, target: torch.Tensor) -> tuple[float, torch.Tensor]:
        autocast = (torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype
                    else contextlib.nullcontext())
        with autocast:
            outputs = self.train_model(images)
            loss = self.loss_fn(outputs.float(), self.task.loss_target(target))
        value = float(loss.detach())
        # one small all-reduce per step: a NaN or a stop request on any rank stops every rank at this step
        nonfinite, self._stop_now = self.dist.any([not math.isfinite(value), bool(self.stop_requested)], self.device)
        if nonfinite:
            raise NonFiniteLossError(value if not math.isfinite(value) else float("nan"), self.state.epoch + 1,
                                     self.state.batch + 1)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.grad_clip_norm is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.step_scheduler_per_batch and self.scheduler is not None:
            self.scheduler.step()
        return value, outputs

    def validate(self, split: str = "val") -> dict[str, float]:
        """Loss and task metrics over the whole split."""
        loader = self.loaders[split]
        loader.sampler.set_epoch(0)
        self.dist.sync_buffers(self.model)
        p = predict(self.model, loader, task=self.task, device=self.device, loss_fn=self.loss_fn,
                    amp_dtype=self.amp_dtype)
        if self.dist.enabled:  # each rank saw a shard: gather them, so every rank computes full-set metrics
            shards = self.dist.all_gather((p.targets, p.outputs, (p.loss or 0.0) * len(p.targets)))
            targets = np.concatenate([t for t, _, _ in shards])
            outputs = np.concatenate([o for _, o, _ in shards])
            p = Predictions(targets, outputs, sum(loss for _, _, loss in shards) / max(len(targets), 1))
        if not np.isfinite(p.outputs).all():
            raise TrainingError(f"the model's outputs on the {split} split became non-finite (NaN/inf) after "
                                f"epoch {self.state.epoch + 1}; lower training.learning_rate")
        return {"loss": float(p.loss), **self.task.metrics(p.targets, p.outputs)}

    def validate_keys(self) -> tuple[str, ...]:
        """Names of the metrics :meth:`validate` returns (without the ``val/`` prefix)."""
        return ("loss", *self.task.metric_names)

    def _step_epoch_scheduler(self, metrics: dict[str, float]) -> None:
        if self.scheduler is None or self.step_scheduler_per_batch:
            return
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(metrics[self.monitor[0]])
        else:
            self.scheduler.step()
