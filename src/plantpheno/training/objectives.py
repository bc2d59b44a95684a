"""What differs between classification and trait regression, behind one small interface."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch

from plantpheno.evaluation.metrics import classification_metrics, regression_metrics
from plantpheno.records.model_meta import ModelMeta
from plantpheno.tasks import CLASSIFICATION, REGRESSION, TaskMetrics


class Task(Protocol):
    """How model outputs become a loss target, predictions, and validation metrics."""

    name: str
    spec: TaskMetrics
    num_outputs: int
    train_metric: str
    metric_names: tuple[str, ...]

    def to_meta(self) -> dict[str, Any]:
        """What checkpoints and model packages record to rebuild this task (:func:`task_from_meta`)."""
        ...

    def loss_target(self, target: torch.Tensor) -> torch.Tensor: ...

    def predictions(self, outputs: torch.Tensor) -> torch.Tensor:
        """Class probabilities (N, C) or trait values (N,) in the original units."""
        ...

    def batch_score(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Sum over the batch of the running training metric (correct count, or absolute error), as a 0-d
        tensor on the outputs' device: the trainer reads it back with the loss, not at every step."""
        ...

    def metrics(self, y_true: np.ndarray, predictions: np.ndarray) -> dict[str, float]: ...


class Classification:
    spec = CLASSIFICATION
    name = spec.name
    train_metric = spec.train_metric
    metric_names = spec.val_metrics

    def __init__(self, class_names: list[str]) -> None:
        self.class_names = class_names
        self.num_outputs = len(class_names)

    def to_meta(self) -> dict[str, Any]:
        return {"task": self.name, "num_outputs": self.num_outputs, "class_names": list(self.class_names),
                "target_mean": None, "target_std": None}

    def loss_target(self, target: torch.Tensor) -> torch.Tensor:
        return target

    def predictions(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.float().softmax(dim=1)

    def batch_score(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (outputs.argmax(dim=1) == target).sum()

    def metrics(self, y_true: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
        m = classification_metrics(y_true.astype(int), predictions.argmax(axis=1), num_classes=self.num_outputs)
        return {k: m[k] for k in self.metric_names}


class Regression:
    """The network learns the standardised trait; predictions are converted back to its units."""

    spec = REGRESSION
    name = spec.name
    train_metric = spec.train_metric
    metric_names = spec.val_metrics
    num_outputs = 1

    def __init__(self, mean: float, std: float, *, counts: bool = False) -> None:
        self.mean, self.std = mean, std
        self.counts = counts  # a count (every training value a whole number): predictions also come rounded

    def to_meta(self) -> dict[str, Any]:
        return {"task": self.name, "num_outputs": 1, "class_names": None, "target_mean": self.mean,
                "target_std": self.std, "counts": self.counts}

    def loss_target(self, target: torch.Tensor) -> torch.Tensor:
        return ((target - self.mean) / self.std)[:, None]

    def predictions(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.float()[:, 0] * self.std + self.mean

    def batch_score(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (self.predictions(outputs) - target).abs().sum()

    def metrics(self, y_true: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
        m = regression_metrics(y_true.astype(float), predictions.astype(float))
        return {k: m[k] for k in self.metric_names}


def task_from_meta(meta: ModelMeta) -> Classification | Regression:
    """The task a checkpoint's or model package's metadata (:meth:`Task.to_meta`) describes."""
    if meta.is_classification:
        return Classification(list(meta.class_names or ()))
    return Regression(float(meta.target_mean or 0.0), float(meta.target_std or 1.0), counts=meta.counts)
