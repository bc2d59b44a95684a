"""BatchNorm statistics re-estimated on a run's own training images (``model.bn_stats: recompute``; AdaBN, Li et al.
2016, "Revisiting Batch Normalization For Practical Domain Adaptation").

A backbone's BatchNorm layers normalise with the mean and variance of the images it was trained on. Photos from
another source (a field camera instead of a lab bench) shift those statistics, and a frozen backbone then hands the
head features off their usual scale. Re-estimating them on the new source's images costs no label: the backbone
runs once over the run's training images (the evaluation preprocessing, no augmentation) in train mode without
gradients, averaging over the batches by their sizes so every image counts alike whatever the batch order. It runs
before any feature is cached or any phase trains, so the cache, the training and the checkpoints (which hold the
statistics as buffers) all see the same backbone. Only the training split is used: no extra images.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch
from torch import nn

from plantpheno.config import DataConfig, ModelConfig
from plantpheno.data.datasets import Loaders
from plantpheno.data.prepared import PreparedData
from plantpheno.errors import ConfigError
from plantpheno.reporting import Reporter


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer of ``model`` that tracks running statistics (timm's BatchNormAct2d included)."""
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def training_images_digest(prepared: PreparedData) -> str:
    """What the recomputed statistics depend on beyond the weights: the training split's images (part of the
    feature-store key, so a pass made with other images' statistics is never served)."""
    paths = sorted(str(s.path) for s in prepared.splits.get("train", ()))
    return hashlib.sha256("\n".join(paths).encode("utf-8")).hexdigest()[:16]


def apply_bn_stats(model: nn.Module, model_cfg: ModelConfig, data: DataConfig, prepared: PreparedData,
                   loaders: Loaders, *, device: torch.device, new_run: bool, reporter: Reporter | None) -> nn.Module:
    """``model``, its BatchNorm statistics re-estimated on the training images when ``model.bn_stats`` asks and the
    run is new (a resumed or evaluated run loads them from its checkpoint). Called before any backbone pass is
    cached."""
    if model_cfg.bn_stats != "recompute" or not new_run:
        return model
    from plantpheno.models import normalization

    mean, std = normalization(model, mean=data.mean, std=data.std)
    layers = batchnorm_layers(model)
    if not layers:
        raise ConfigError(f"model.bn_stats: recompute: the backbone {model_cfg.backbone!r} has no BatchNorm "
                          f"layer to re-estimate (it normalises per image); set model.bn_stats: keep")
    train = prepared.splits.get("train", ())
    if not train:
        raise ConfigError("model.bn_stats: recompute needs training images to estimate the statistics on; the "
                          "training split is empty")
    from plantpheno.training.features import extract_band_features, extract_features, pass_batch_size

    images = loaders["train"]
    batch = max(pass_batch_size(images.batch_size, device), 2)  # train-mode BatchNorm needs 2 images a batch
    with _estimating(layers):
        fn = _forward_in_train_mode(model, layers)
        if prepared.band_norm is not None:
            extract_band_features(model, prepared, "train", data, batch_size=batch, device=device,
                                  num_workers=images.num_workers, fn=fn, reporter=reporter)
        else:
            extract_features(model, [s.path for s in train], image_size=data.image_size, mean=mean, std=std,
                             batch_size=batch, device=device, num_workers=images.num_workers, fn=fn,
                             resize=data.resize, reporter=reporter, desc="BatchNorm statistics (train)")
    if reporter is not None:
        reporter.info(f"model.bn_stats: recompute: the statistics of {len(layers)} BatchNorm layers re-estimated "
                      f"on the {len(train)} training images")
    return model


class _estimating:
    """Reset the layers' statistics for the pass (which sets each batch's momentum), then restore each layer's
    momentum."""

    def __init__(self, layers: list[nn.modules.batchnorm._BatchNorm]) -> None:
        self.layers = layers
        self.momenta = [m.momentum for m in layers]

    def __enter__(self) -> None:
        for m in self.layers:
            m.reset_running_stats()

    def __exit__(self, *exc: object) -> None:
        for m, momentum in zip(self.layers, self.momenta, strict=True):
            m.momentum = momentum


def _forward_in_train_mode(model: nn.Module,
                           layers: list[nn.modules.batchnorm._BatchNorm]) -> Callable[[torch.Tensor], torch.Tensor]:
    """A batch function for the feature pass (which runs ``model`` in eval mode without gradients): the BatchNorm
    layers alone switch to train mode for the forward, so they update their running statistics; dropout and
    the rest stay in eval mode. Each batch's momentum is its share of the images seen so far, so the running mean
    is the mean over every image whatever the batch sizes (the variance: the size-weighted mean of the batches')."""
    seen = [0]

    def forward(batch: torch.Tensor) -> torch.Tensor:
        seen[0] += len(batch)
        for m in layers:
            m.momentum = len(batch) / seen[0]
        with _train_mode(layers):
            model.forward_features(batch)
        return torch.zeros(len(batch), 1)  # nothing to keep: the statistics are the result

    return forward


class _train_mode:
    def __init__(self, layers: list[nn.modules.batchnorm._BatchNorm]) -> None:
        self.layers = layers

    def __enter__(self) -> None:
        for m in self.layers:
            m.train(True)

    def __exit__(self, *exc: object) -> None:
        for m in self.layers:
            m.train(False)
