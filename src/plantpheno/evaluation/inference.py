"""Running a model over a DataLoader: targets, predictions and (optionally) the mean loss."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from plantpheno.data.batch_augment import BatchFinish
from plantpheno.evaluation.one_pass import feature_parts, outputs_and_features
from plantpheno.models import input_format, set_train_mode
from plantpheno.reporting import Progress


@dataclass(frozen=True)
class Predictions:
    targets: np.ndarray  # class indices or trait values
    outputs: np.ndarray  # class probabilities (N, C) or trait values (N,)
    loss: float | None
    raw: np.ndarray | None = None  # the network's outputs (logits, or the standardised trait), TTA-averaged
    raw_plain: np.ndarray | None = None  # with TTA: the raw outputs of the image as it is (no TTA)
    features: np.ndarray | None = None  # asked for: the pooled features of the image as it is (evaluation.one_pass)


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, *, task, device: torch.device,
            loss_fn: nn.Module | None = None, amp_dtype: torch.dtype | None = None,
            finish: BatchFinish | None = None, tta: str = "none", progress: Progress | None = None,
            features: bool = False) -> Predictions:
    """Evaluate ``model`` on every batch of ``loader`` in order (eval mode, no gradients); ``finish`` (the
    loaders' finishing step) moves each batch to ``device``. ``tta`` (:mod:`plantpheno.evaluation.tta`)
    averages the raw outputs over flipped/turned views; ``raw_plain`` then keeps those without. ``progress``
    (from the caller's reporter) counts the batches. ``features``: also keep the pooled features of the same pass
    (:mod:`plantpheno.evaluation.one_pass`), unless ``model`` cannot be split into features and head or runs
    under autocast (the detector's features are float32): ``Predictions.features`` is then None."""
    set_train_mode(model, False)
    fmt, finish = input_format(model), finish or BatchFinish()
    parts = feature_parts(model) if features and amp_dtype is None else None
    targets, outputs, raws, plains, kept, loss_sum = [], [], [], [], [], 0.0
    for images, target in loader:
        four_d = isinstance(images, torch.Tensor) and images.dim() == 4
        images = finish(images, device, memory_format=fmt if four_d else torch.contiguous_format)
        target = target.to(device, non_blocking=True)
        with (torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()):
            raw, plain, pooled = outputs_and_features(model, images, tta, parts)
        if loss_fn is not None:
            loss_sum += float(loss_fn(raw.float(), task.loss_target(target))) * len(target)
        targets.append(target.cpu())
        outputs.append(task.predictions(raw).cpu())
        raws.append(raw.float().cpu())
        plains.append(plain.float().cpu())
        if pooled is not None:
            kept.append(pooled.cpu())
        if progress is not None:
            progress.update(1)
    y = torch.cat(targets).numpy() if targets else np.zeros(0)
    out = torch.cat(outputs).numpy() if outputs else np.zeros(0)
    raw_all = torch.cat(raws).numpy() if raws else None
    plain_all = torch.cat(plains).numpy() if plains and tta != "none" else None
    pooled_all = torch.cat(kept).numpy() if kept else None
    return Predictions(y, out, loss_sum / len(y) if loss_fn is not None and len(y) else None, raw_all, plain_all,
                       pooled_all)
