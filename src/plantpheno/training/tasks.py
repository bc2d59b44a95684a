"""What differs between classification and trait regression, behind one small interface."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from plantpheno.evaluation.metrics import classification_metrics, regression_metrics


class Task(Protocol):
    """How model outputs become a loss target, predictions, and validation metrics."""

    name: str
    num_outputs: int
    train_metric: str
    metric_names: tuple[str, ...]

    def loss_target(self, target: torch.Tensor) -> torch.Tensor: ...

    def predictions(self, outputs: torch.Tensor) -> torch.Tensor:
        """Class probabilities (N, C) or trait values (N,) in the original units."""
        ...

    def batch_score(self, outputs: torch.Tensor, target: torch.Tensor) -> float:
        """Sum over the batch of the running training metric (correct count, or absolute error)."""
        ...

    def metrics(self, y_true: np.ndarray, predictions: np.ndarray) -> dict[str, float]: ...


class Classification:
    name = "classification"
    train_metric = "accuracy"
    metric_names = ("accuracy", "macro_f1", "weighted_f1")

    def __init__(self, class_names: list[str]) -> None:
        self.class_names = class_names
        self.num_outputs = len(class_names)

    def loss_target(self, target: torch.Tensor) -> torch.Tensor:
        return target

    def predictions(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.float().softmax(dim=1)

    def batch_score(self, outputs: torch.Tensor, target: torch.Tensor) -> float:
        return float((outputs.argmax(dim=1) == target).sum())

    def metrics(self, y_true: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
        m = classification_metrics(y_true.astype(int), predictions.argmax(axis=1), num_classes=self.num_outputs)
        return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "weighted_f1": m["weighted_f1"]}


class Regression:
    """The network learns the standardised trait; predictions are converted back to its units."""

    name = "regression"
    train_metric = "mae"
    metric_names = ("mae", "rmse", "r2")
    num_outputs = 1

    def __init__(self, mean: float, std: float) -> None:
        self.mean, self.std = mean, std

    def loss_target(self, target: torch.Tensor) -> torch.Tensor:
        return ((target - self.mean) / self.std)[:, None]

    def predictions(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.float()[:, 0] * self.std + self.mean

    def batch_score(self, outputs: torch.Tensor, target: torch.Tensor) -> float:
        return float((self.predictions(outputs) - target).abs().sum())

    def metrics(self, y_true: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
        m = regression_metrics(y_true.astype(float), predictions.astype(float))
        return {"mae": m["mae"], "rmse": m["rmse"], "r2": m["r2"]}
