"""Optimizers and learning-rate schedules by name."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, ReduceLROnPlateau, StepLR

from plantpheno.config import TrainingConfig


def build_optimizer(model: nn.Module, training: TrainingConfig, *, world_size: int = 1,
                    scale_lr: bool = False) -> torch.optim.Optimizer:
    """Adam, AdamW or SGD (Nesterov momentum) over trainable parameters.

    Biases and normalisation parameters get no weight decay (timm's parameter grouping). With
    ``distributed.scale_lr`` the learning rate grows linearly with the world size (Goyal et al. 2017).
    """
    from timm.optim import create_optimizer_v2

    t = training
    kwargs = {"momentum": t.momentum} if t.optimizer == "sgd" else {}
    lr = effective_lr(t.learning_rate, world_size=world_size, scale_lr=scale_lr)
    # the multi-tensor update: the same arithmetic, bit for bit, as the per-parameter loop (tested), which torch
    # picks by default on CPU; the fine-tune step is 1.10x faster with it (benchmarks/fine_tune_profile.py)
    return create_optimizer_v2(model, opt=t.optimizer, lr=lr, weight_decay=t.weight_decay, foreach=True, **kwargs)


def effective_lr(learning_rate: float, *, world_size: int, scale_lr: bool) -> float:
    """The learning rate, times the world size with ``distributed.scale_lr``."""
    return learning_rate * (world_size if scale_lr else 1)


def cosine_with_warmup(step: int, *, warmup_steps: int, total_steps: int) -> float:
    """LR factor: linear warmup from ~0 to 1, then half a cosine down to 0 at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


class _CosineFactor:
    # A picklable callable (not a lambda) so the schedule can be rebuilt identically on resume.
    def __init__(self, warmup_steps: int, total_steps: int) -> None:
        self.warmup_steps, self.total_steps = warmup_steps, total_steps

    def __call__(self, step: int) -> float:
        return cosine_with_warmup(step, warmup_steps=self.warmup_steps, total_steps=self.total_steps)


def build_scheduler(optimizer: torch.optim.Optimizer, training: TrainingConfig, *, steps_per_epoch: int,
                    monitor_mode: Literal["max", "min"]) -> LRScheduler | ReduceLROnPlateau | None:
    """``cosine`` steps every batch; ``step`` and ``plateau`` every epoch (``plateau`` watches the monitored
    metric, larger or smaller better as ``monitor_mode`` says); ``none`` -> None."""
    t = training
    if t.scheduler == "cosine":
        warmup = round(t.warmup_epochs * steps_per_epoch)
        return LambdaLR(optimizer, _CosineFactor(warmup, t.epochs * steps_per_epoch))
    if t.scheduler == "step":
        return StepLR(optimizer, step_size=t.step_size, gamma=t.gamma)
    if t.scheduler == "plateau":
        return ReduceLROnPlateau(optimizer, mode=monitor_mode, factor=t.gamma, patience=t.plateau_patience)
    return None


def steps_per_batch(training: TrainingConfig) -> bool:
    """True when the scheduler advances every batch rather than every epoch."""
    return training.scheduler == "cosine"
