"""Datasets, transforms and loaders for images of ``data.bands`` (N bands, float), beside the RGB path.

The RGB path decodes to 8-bit PIL images and augments whole uint8 batches; bands are float and any number, so
they take their own, simpler path: each image is read (:func:`~plantpheno.data.bands.read_bands`), clipped and
standardised per band (:class:`~plantpheno.data.bands.BandNorm`), and only then resized and augmented as a
``(C, H, W)`` float tensor. Standardising first makes 0 the training mean of every band, so the letterbox of
``data.resize=pad`` and the corners a rotation brings in are the mean, as on the RGB path.

Augmentations: the geometric ones (rotation, resized crop, flips) act on all bands alike; brightness and
contrast are drawn per band (a band's gain and offset vary with its own sensor and light); saturation only when
red, green and blue are all present (it mixes those three); hue is not applied. With
``data.augment.batched_bands: true`` whole batches are augmented at once instead
(:mod:`plantpheno.data.band_batch_augment`, which also turns the hue of red, green and blue when all three are
present); it is off by default, as it trained to lower accuracy on the synthetic multispectral set
(docs/guide/bands.md, Augmentation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2 as T
from torchvision.transforms.v2 import functional as F

from plantpheno.band_config import RGB, BandSpec
from plantpheno.config import AugmentConfig, DataConfig
from plantpheno.data.band_cache import BandCache, build_band_cache
from plantpheno.data.bands import BandNorm, read_bands
from plantpheno.data.band_batch_augment import BandBatchAugment, augment_band_batch, band_extent
from plantpheno.data.cache import CACHE_DIR, cache_spec
from plantpheno.data.datasets import (EpochSampler, Loaders, PreparedData, _balanced_weights, _Batch, collate,
                                      resolve_num_workers)
from plantpheno.reporting import Reporter


class BandSquare:
    """``data.resize`` for a ``(C, H, W)`` tensor: crop (shorter side to ``side``, centre square), pad (longer
    side to ``side``, centred on zeros: the standardised mean) or stretch."""

    def __init__(self, side: int, resize: str) -> None:
        self.side, self.resize = side, resize

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        side, (height, width) = self.side, image.shape[-2:]
        if self.resize == "stretch":
            return F.resize(image, [side, side], antialias=True)
        scale = side / (min(height, width) if self.resize == "crop" else max(height, width))
        size = [max(1, round(height * scale)), max(1, round(width * scale))]
        image = F.resize(image, size, antialias=True)
        if self.resize == "crop":
            return F.center_crop(image, [side, side])
        top, left = (side - size[0]) // 2, (side - size[1]) // 2
        return torch.nn.functional.pad(image, (left, side - size[1] - left, top, side - size[0] - top))


class BandJitter:
    """Brightness and contrast per band (factors in ``[1 - strength, 1 + strength]``), and saturation of the RGB
    bands when all three are present, on standardised bands (brightness scales a band around its zero point
    in the file's units, so it is applied as ``z * f + (f - 1) * mean / std``)."""

    def __init__(self, names: Sequence[str], norm: BandNorm, strength: float) -> None:
        self.strength = strength
        self.offset = torch.tensor(norm.mean, dtype=torch.float32) / torch.tensor(norm.std, dtype=torch.float32)
        self.rgb = [names.index(n) for n in RGB] if all(n in names for n in RGB) else None

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        count = image.shape[0]
        draw = lambda: (1 + self.strength * (2 * torch.rand(count) - 1)).view(-1, 1, 1)  # noqa: E731
        brightness, contrast = draw(), draw()
        image = image * brightness + (brightness - 1) * self.offset.view(-1, 1, 1)
        mean = image.mean(dim=(1, 2), keepdim=True)
        image = mean + (image - mean) * contrast
        if self.rgb is not None:
            factor = float(1 + self.strength * (2 * torch.rand(()) - 1))
            rgb = image[self.rgb]
            grey = rgb.mean(dim=0, keepdim=True)
            image = image.clone()
            image[self.rgb] = grey + (rgb - grey) * factor
        return image


def band_eval_transform(image_size: int, resize: str) -> T.Compose:
    """Standardised ``(C, H, W)`` bands -> the model's square."""
    return T.Compose([BandSquare(image_size, resize)])


def band_train_transform(image_size: int, resize: str, augment: AugmentConfig, names: Sequence[str],
                         norm: BandNorm) -> T.Compose:
    """Rotation, resized crop and flips on all bands; brightness/contrast per band (:class:`BandJitter`)."""
    if not augment.enabled:
        return band_eval_transform(image_size, resize)
    steps: list = []
    if resize != "crop":
        steps.append(BandSquare(image_size, resize))
    if augment.rotation > 0:
        steps.append(T.RandomRotation(augment.rotation, interpolation=T.InterpolationMode.BILINEAR))
    if tuple(augment.crop_scale) != (1.0, 1.0) and not augment.keep_whole:
        steps.append(T.RandomResizedCrop(image_size, scale=tuple(augment.crop_scale), antialias=True))
    else:
        steps.append(BandSquare(image_size, resize))
    if augment.hflip > 0:
        steps.append(T.RandomHorizontalFlip(augment.hflip))
    if augment.vflip > 0:
        steps.append(T.RandomVerticalFlip(augment.vflip))
    if augment.color_jitter > 0:
        steps.append(BandJitter(names, norm, augment.color_jitter))
    return T.Compose(steps)


def standardised(path: Path, bands: Sequence[BandSpec], norm: BandNorm,
                 companions: Mapping[str, Path] | None = None) -> torch.Tensor:
    """An image file's bands (with its band files: ``companions`` or patterns), clipped and standardised, as a
    ``(C, H, W)`` float32 tensor."""
    pixels = read_bands(path, bands, max_pixels=None, companions=companions)
    return torch.from_numpy(np.ascontiguousarray(norm.apply(pixels).transpose(2, 0, 1)))


class BandDataset(Dataset):
    """Band images and targets; an item is requested as ``(index, augmentation_seed)`` (as
    :class:`~plantpheno.data.datasets.ImageDataset`). With ``batched`` (a training split of
    ``data.augment.batched_bands``), whole batches are squared at ``source_side`` and augmented at once
    (:mod:`plantpheno.data.band_batch_augment`)."""

    def __init__(self, paths: Sequence[Path], targets: Sequence[int] | Sequence[float], transform, *,
                 bands: Sequence[BandSpec], norm: BandNorm, regression: bool,
                 companions: Sequence[Mapping[str, Path]] | None = None, cache: BandCache | None = None,
                 batched: BandBatchAugment | None = None, source_side: int | None = None) -> None:
        self.paths, self.bands, self.norm, self.transform = list(paths), tuple(bands), norm, transform
        self.cache = cache  # data.cache: the file values read once (plantpheno.data.band_cache)
        self.companions = list(companions) if companions is not None else [{}] * len(self.paths)
        self.targets = torch.tensor(targets, dtype=torch.float32 if regression else torch.long)
        self.batched = batched
        # the square the batch is cut from: with a random crop, a margin larger than the model's (data/cache.py)
        self.source = BandSquare(source_side or batched.image_size, batched.resize) if batched is not None else None

    def __len__(self) -> int:
        return len(self.paths)

    def _image(self, index: int) -> torch.Tensor:
        if self.cache is not None:
            pixels = self.norm.apply(self.cache.array(index))
            return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))
        return standardised(self.paths[index], self.bands, self.norm, self.companions[index])

    def __getitems__(self, items: Sequence[tuple[int, int]]) -> Any:
        """A whole batch (the DataLoader calls this in its worker, then the collate function)."""
        if self.batched is None or self.source is None:
            return [self[item] for item in items]
        squares, content = [], []
        for index, _ in items:
            image = self._image(index)
            squares.append(self.source(image))
            content.append(band_extent(*image.shape[-2:], self.source.side, self.source.resize))
        images = augment_band_batch(self.batched, squares, [seed for _, seed in items], np.array(content))
        return _Batch((images, self.targets[torch.tensor([index for index, _ in items])]))

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.batched is not None:
            images, targets = self.__getitems__([item])
            return images[0], targets[0]
        index, seed = item
        image = self._image(index)
        if torch.utils.data.get_worker_info() is not None:
            torch.manual_seed(seed)
            return self.transform(image), self.targets[index]
        with torch.random.fork_rng(devices=[]):  # keep the main process's RNG stream untouched
            torch.manual_seed(seed)
            return self.transform(image), self.targets[index]


def build_band_loaders(prepared: PreparedData, data: DataConfig, *, seed: int, norm: BandNorm,
                       pin_memory: bool = False, rank: int = 0, world: int = 1, splits: Sequence[str],
                       output_dir: Path | None = None, reporter: Reporter | None = None) -> Loaders:
    """:func:`~plantpheno.data.datasets.build_loaders` for ``data.bands``: the same samplers (order and seeds
    from ``(seed, epoch)``), sharding and batching, with :class:`BandDataset` and per-image augmentation."""
    assert data.bands is not None
    names = [b.name.lower() for b in data.bands]
    workers = resolve_num_workers(data.num_workers)
    loaders = {}
    for name in splits:
        is_train = name == "train"
        transform = (band_train_transform(data.image_size, data.resize, data.augment, names, norm) if is_train
                     else band_eval_transform(data.image_size, data.resize))
        targets = prepared.targets(name)
        samples = prepared.splits[name]
        paths, companions = [s.path for s in samples], [dict(s.companions) for s in samples]
        cache = (build_band_cache(paths, companions, data.bands, mode=data.cache, fingerprint=prepared.fingerprint,
                                  directory=output_dir / CACHE_DIR if output_dir is not None else None,
                                  reporter=reporter, desc=f"caching {name} band images")
                 if data.cache != "none" and samples else None)
        batched = (BandBatchAugment(data.image_size, data.augment, data.resize, names, norm)
                   if is_train and data.augment.enabled and data.augment.batched_bands else None)
        dataset = BandDataset(paths, targets, transform, bands=data.bands, norm=norm,
                              regression=prepared.class_names is None, companions=companions, cache=cache,
                              batched=batched, source_side=cache_spec(data, train=is_train).side)
        weights = _balanced_weights(targets) if is_train and data.class_balanced_sampling else None
        shard = {"rank": rank, "world": world, "pad": is_train} if name != "test" else {}
        sampler = EpochSampler(len(dataset), seed=seed, shuffle=is_train, weights=weights, **shard)
        loaders[name] = DataLoader(dataset, batch_size=data.batch_size, sampler=sampler, num_workers=workers,
                                   persistent_workers=workers > 0, pin_memory=pin_memory,
                                   drop_last=is_train and len(dataset) > data.batch_size, collate_fn=collate,
                                   generator=torch.Generator().manual_seed(seed))
    return Loaders(loaders)
