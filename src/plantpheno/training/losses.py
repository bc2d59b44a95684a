"""Loss functions by name: cross-entropy (label smoothing), focal, class-weighted; MSE/Huber for traits."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from plantpheno.config import Config


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


def _cross_entropy(config: Config, weight: torch.Tensor | None) -> nn.Module:
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=config.training.label_smoothing)


def _focal(config: Config, weight: torch.Tensor | None) -> nn.Module:
    return FocalLoss(config.training.focal_gamma, weight)


def _mse(config: Config, weight: torch.Tensor | None) -> nn.Module:
    return nn.MSELoss()


def _huber(config: Config, weight: torch.Tensor | None) -> nn.Module:
    return nn.HuberLoss(delta=config.training.huber_delta)


LOSSES: dict[str, Callable[[Config, torch.Tensor | None], nn.Module]] = {
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


def build_loss(config: Config, *, train_targets: Sequence[int] | Sequence[float], num_classes: int) -> nn.Module:
    """The configured loss; class weights computed from the training split when asked for."""
    weight = None
    if config.task == "classification" and config.training.class_weights == "balanced":
        weight = balanced_class_weights([int(t) for t in train_targets], num_classes)
    return LOSSES[config.loss_name](config, weight)
