"""Loss functions by name: cross-entropy (label smoothing), focal, class-weighted; MSE/Huber for traits."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from plantpheno.config import TrainingConfig


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017): down-weights easy examples, for rare-disease classes."""

    def __init__(self, gamma: float, weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.gamma = gamma
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits.float(), dim=1)
        log_pt = log_p.gather(1, target[:, None]).squeeze(1)
        loss = -((1 - log_pt.exp()) ** self.gamma) * log_pt
        if self.weight is not None:
            w = self.weight[target]
            return (loss * w).sum() / w.sum()
        return loss.mean()


def _cross_entropy(training: TrainingConfig, weight: torch.Tensor | None) -> nn.Module:
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=training.label_smoothing)


def _focal(training: TrainingConfig, weight: torch.Tensor | None) -> nn.Module:
    return FocalLoss(training.focal_gamma, weight)


def _mse(training: TrainingConfig, weight: torch.Tensor | None) -> nn.Module:
    return nn.MSELoss()


def _huber(training: TrainingConfig, weight: torch.Tensor | None) -> nn.Module:
    return nn.HuberLoss(delta=training.huber_delta)


LOSSES: dict[str, Callable[[TrainingConfig, torch.Tensor | None], nn.Module]] = {
    "cross_entropy": _cross_entropy,
    "focal": _focal,
    "mse": _mse,
    "huber": _huber,
}


def balanced_class_weights(targets: Sequence[int], num_classes: int) -> torch.Tensor:
    """n / (k * count_c), the 'balanced' heuristic; a class absent from training gets weight 0."""
    counts = Counter(targets)
    n = len(targets)
    return torch.tensor([n / (num_classes * counts[c]) if counts[c] else 0.0 for c in range(num_classes)])


def build_loss(training: TrainingConfig, *, task: str, train_targets: Sequence[int] | Sequence[float],
               num_classes: int) -> nn.Module:
    """The loss ``training`` names for ``task``; class weights computed from the training split when asked for."""
    weight = None
    if task == "classification" and training.class_weights == "balanced":
        weight = balanced_class_weights([int(t) for t in train_targets], num_classes)
    return LOSSES[training.loss_for(task)](training, weight)
