"""Image transforms: plant-suited training augmentations, and deterministic evaluation preprocessing."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2 as T

from plantpheno.config import AugmentConfig


def _to_tensor(mean: Sequence[float], std: Sequence[float]) -> list[T.Transform]:
    return [T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(list(mean), list(std))]


def eval_transform(image_size: int, mean: Sequence[float], std: Sequence[float]) -> T.Compose:
    """Resize the shorter side to ``image_size`` and centre-crop a square (a square photo stays whole)."""
    return T.Compose([T.Resize(image_size, antialias=True), T.CenterCrop(image_size), *_to_tensor(mean, std)])


def train_transform(image_size: int, mean: Sequence[float], std: Sequence[float],
                    augment: AugmentConfig) -> T.Compose:
    """Random rotation, resized crop, flips and colour jitter, as configured; off -> the eval transform.

    Rotation comes before cropping so the black corners it makes are mostly cropped away. Flips in
    both directions are safe for top-down and single-leaf photos, which have no canonical "up".
    """
    if not augment.enabled:
        return eval_transform(image_size, mean, std)
    steps: list[T.Transform] = []
    if augment.rotation > 0:
        steps.append(T.RandomRotation(augment.rotation))
    if tuple(augment.crop_scale) == (1.0, 1.0):
        steps += [T.Resize(image_size, antialias=True), T.CenterCrop(image_size)]
    else:
        steps.append(T.RandomResizedCrop(image_size, scale=tuple(augment.crop_scale), antialias=True))
    if augment.hflip > 0:
        steps.append(T.RandomHorizontalFlip(augment.hflip))
    if augment.vflip > 0:
        steps.append(T.RandomVerticalFlip(augment.vflip))
    if augment.color_jitter > 0 or augment.hue > 0:
        c = augment.color_jitter
        steps.append(T.ColorJitter(brightness=c, contrast=c, saturation=c, hue=augment.hue))
    return T.Compose([*steps, *_to_tensor(mean, std)])
