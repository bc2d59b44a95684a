"""Frozen-backbone feature cache: run the backbone once, then train only the head on cached features.

With ``model.freeze_backbone: true`` the backbone is a fixed function (eval mode, no gradients), so
its pooled features can be computed once per image instead of once per image per epoch. The head
then trains in seconds. The cached path reproduces the uncached frozen path: same sample order
(the same :class:`~plantpheno.data.datasets.EpochSampler`), same dropout draws, same optimizer over
the same parameters (the head here *is* the model's classifier). Training images are featurised
without augmentation (the evaluation preprocessing), and with ``training.feature_cache_views: V > 1``
also ``V - 1`` times with the configured augmentations, each view drawn once from a seed fixed by
(config seed, view, image); every epoch then takes one of an image's views, chosen by the sample's
augmentation seed, so the head sees augmented features at the cost of ``V - 1`` extra passes once.
With one view the cached path reproduces the uncached frozen path exactly.

With a fine-tune phase (:mod:`plantpheno.training.fine_tune`) the cache may instead hold the frozen
part's activations where the unfrozen blocks begin; :func:`map_cached` pools the head's features from
them, and the fine-tune phase trains on them directly.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from plantpheno.config import DataConfig
from plantpheno.data.batch_augment import BatchFinish
from plantpheno.data.cache import ImageCache, cache_spec
from plantpheno.data.datasets import EpochSampler, ImageDataset, Loaders, collate
from plantpheno.data.prepared import PreparedData
from plantpheno.data.transforms import eval_transform
from plantpheno.models import input_format
from plantpheno.reporting import Reporter
from plantpheno.training.feature_store import FeatureStore


class CachedHead(nn.Module):
    """Dropout + the model's own classifier (shared parameters), applied to cached pooled features."""

    def __init__(self, model: nn.Module, *, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = model.get_classifier()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(features))


class FeatureDataset(Dataset):
    """Cached features ``(views, N, ...)`` (pooled features, or activations at a cut); items are requested as
    ``(index, seed)`` like :class:`ImageDataset`'s, and the seed picks the view."""

    def __init__(self, features: torch.Tensor, targets: torch.Tensor) -> None:
        if features.dim() < 3 or features.shape[1] != len(targets):
            raise ValueError(f"cached features of shape {tuple(features.shape)} for {len(targets)} targets; "
                             f"expected (views, {len(targets)}, ...)")
        self.features, self.targets = features, targets

    def __len__(self) -> int:
        return self.features.shape[1]

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed = item
        return self.features[seed % self.features.shape[0], index], self.targets[index]


class _Items(Sampler[tuple[int, int]]):
    """``(index, seed)`` for every image in order: one fixed augmentation seed per image of a view."""

    def __init__(self, seeds: torch.Tensor) -> None:
        self.seeds = seeds

    def __len__(self) -> int:
        return len(self.seeds)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter([(i, int(s)) for i, s in enumerate(self.seeds)])


def pooled_features(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """Images -> the backbone's pooled pre-logits features (what the head sees)."""
    return lambda images: model.forward_head(model.forward_features(images), pre_logits=True)


@torch.no_grad()
def _featurise(fn: Callable[[torch.Tensor], torch.Tensor], model: nn.Module, loader: DataLoader,
               device: torch.device, finish: BatchFinish, reporter: Reporter | None = None,
               desc: str = "backbone pass") -> torch.Tensor:
    """``fn`` over every batch of ``loader`` (moved by ``finish``), with ``model`` (whose modules ``fn`` runs)
    in eval mode; ``reporter`` shows the progress in images."""
    was_training = model.training
    model.eval()
    fmt = input_format(model)
    bar = reporter.progress(total=len(loader.sampler), desc=desc, unit="img") if reporter is not None else None
    chunks = []
    try:
        for images, _ in loader:
            chunks.append(fn(finish(images, device, memory_format=fmt)).float().cpu().contiguous())
            if bar is not None:
                bar.update(len(chunks[-1]))
    finally:
        if bar is not None:
            bar.close()
    model.train(was_training)
    return torch.cat(chunks)


def augmented_views(model: nn.Module, train_images: ImageDataset, *, views: int, seed: int, batch_size: int,
                    num_workers: int, device: torch.device, finish: BatchFinish,
                    fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
                    reporter: Reporter | None = None) -> list[torch.Tensor]:
    """Features (or ``fn``'s outputs) of ``views`` augmented passes over the training images
    (``train_images`` augments; ``finish`` completes its batches)."""
    out = []
    for view in range(views):
        seeds = torch.randint(0, 2**62, (len(train_images),), generator=torch.Generator().manual_seed(
            seed * 1_000_003 + 7_919 * (view + 1)))
        loader = DataLoader(train_images, batch_size=batch_size, num_workers=num_workers, sampler=_Items(seeds),
                            collate_fn=collate, generator=torch.Generator())
        out.append(_featurise(fn or pooled_features(model), model, loader, device, finish, reporter,
                              f"backbone pass (train, augmented view {view + 2}/{views + 1})"))
    return out


@torch.no_grad()
def extract_features(model: nn.Module, paths: Sequence[Path], *, image_size: int, mean: Sequence[float],
                     std: Sequence[float], batch_size: int, device: torch.device, num_workers: int,
                     fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
                     cache: ImageCache | None = None, resize: str = "crop", reporter: Reporter | None = None,
                     desc: str = "backbone pass") -> torch.Tensor:
    """Pooled pre-logits features ``(N, D)`` of every image (or ``fn``'s outputs), in order, with the
    backbone in eval mode; ``reporter`` shows the progress (``desc``)."""
    # ``cache``: the split's decoded pixels at the evaluation size (``data.cache``), else decoded from disk
    dataset = ImageDataset(paths, [0] * len(paths), eval_transform(image_size, mean, std, resize), regression=False,
                           cache=cache)
    # a private generator: the loader's base seed must not come from (and shift) the global RNG
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, generator=torch.Generator(),
                        sampler=EpochSampler(len(paths), seed=0, shuffle=False))
    return _featurise(fn or pooled_features(model), model, loader, device, BatchFinish(), reporter, desc)


@torch.no_grad()
def extract_band_features(model: nn.Module, prepared: PreparedData, split: str, data: DataConfig, *,
                          batch_size: int, device: torch.device, num_workers: int,
                          fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
                          reporter: Reporter | None = None, cache: Any = None) -> torch.Tensor:
    """As :func:`extract_features` for ``data.bands``: a split's band images (with their band files), clipped and
    standardised by the training split's band statistics and squared as evaluation squares them; ``cache``: the
    split's :class:`~plantpheno.data.band_cache.BandCache` (``data.cache``; it holds the images before any
    transform, so the training split's serves too)."""
    from plantpheno.data.band_loaders import BandDataset, band_eval_transform

    assert data.bands is not None and prepared.band_norm is not None
    samples = prepared.splits[split]
    dataset = BandDataset([s.path for s in samples], [0] * len(samples),
                          band_eval_transform(data.image_size, data.resize), bands=data.bands,
                          norm=prepared.band_norm, regression=False, companions=[dict(s.companions) for s in samples],
                          cache=cache)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, generator=torch.Generator(),
                        sampler=EpochSampler(len(samples), seed=0, shuffle=False))
    return _featurise(fn or pooled_features(model), model, loader, device, BatchFinish(), reporter,
                      f"backbone pass ({split})")


# A forward pass without gradients on CPU is fastest in small batches, where a layer's activations stay in the
# caches: Lite0's frozen part at 224 px ran 1.54x faster in batches of 16 than of 64 on a 2-core EPYC
# (benchmarks/backbone_pass.py). A GPU wants large ones.
CPU_PASS_BATCH = 16


def pass_batch_size(train_batch: int, device: torch.device) -> int:
    """The batch size of a backbone pass (no gradients): small on CPU, at least 64 on a GPU."""
    return CPU_PASS_BATCH if device.type == "cpu" else max(train_batch, 64)


def cache_inputs(prepared: PreparedData, image_loaders: Loaders, model: nn.Module, data: DataConfig, *,
                 views: int, seed: int, mean: Sequence[float], std: Sequence[float], device: torch.device,
                 fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 reporter: Reporter | None = None, store: FeatureStore | None = None,
                 store_key: Hashable | None = None) -> dict[str, torch.Tensor]:
    """``fn`` (default: the pooled features) of every train and val image, ``(views, N, ...)``: view 0 with
    the evaluation preprocessing, ``views - 1`` (``training.feature_cache_views``) augmented views of the training
    images, drawn with ``seed``. ``reporter`` shows each pass's progress. With ``store`` and ``store_key`` (the
    pass's identity), view 0 comes from the store when it holds every image, and goes into it otherwise."""
    cached = {}
    for split in ("train", "val"):
        images = image_loaders[split]
        batch = pass_batch_size(images.batch_size, device)
        paths = [s.path for s in prepared.splits[split]]
        outputs = store.get(store_key, paths) if store is not None and store_key is not None else None
        if outputs is None and prepared.band_norm is not None:  # data.bands: the band images, scaled per band
            outputs = extract_band_features(model, prepared, split, data, batch_size=batch, device=device,
                                            num_workers=images.num_workers, fn=fn, reporter=reporter,
                                            cache=images.dataset.cache)
            if store is not None and store_key is not None:
                store.put(store_key, paths, outputs)
        elif outputs is None:
            # the loader's decoded-image cache serves when it holds the evaluation size: always for val, and for
            # train when training takes no random crops
            same_size = split == "val" or cache_spec(data, train=True) == cache_spec(data, train=False)
            outputs = extract_features(model, paths, image_size=data.image_size,
                                       mean=mean, std=std, batch_size=batch, device=device,
                                       num_workers=images.num_workers, fn=fn, resize=data.resize,
                                       cache=images.dataset.cache if same_size else None, reporter=reporter,
                                       desc=f"backbone pass ({split})")
            if store is not None and store_key is not None:
                store.put(store_key, paths, outputs)
        elif reporter is not None:
            reporter.info(f"backbone pass ({split}): {len(paths)} images reused from an earlier run's pass")
        extra = (augmented_views(model, images.dataset, views=views - 1, seed=seed, batch_size=batch,
                                 num_workers=images.num_workers, device=device, finish=image_loaders.finish, fn=fn,
                                 reporter=reporter)
                 if split == "train" and views > 1 else [])
        cached[split] = torch.stack([outputs, *extra])
    return cached


@torch.no_grad()
def map_cached(cached: dict[str, torch.Tensor], fn: Callable[[torch.Tensor], torch.Tensor], model: nn.Module, *,
               device: torch.device, batch_size: int | None = None) -> dict[str, torch.Tensor]:
    """``fn`` over cached tensors ``(views, N, ...)`` in batches (e.g. activations at a cut -> pooled features);
    4-D batches take ``model``'s memory format (:func:`plantpheno.models.input_format`)."""
    was_training = model.training
    model.eval()
    batch_size = batch_size or (2 * CPU_PASS_BATCH if device.type == "cpu" else 128)
    finish, out = BatchFinish(), {}
    for split, tensor in cached.items():
        flat = tensor.flatten(0, 1)
        fmt = input_format(model) if flat.dim() == 4 else torch.contiguous_format
        mapped = torch.cat([fn(finish(flat[i:i + batch_size], device, memory_format=fmt)).float().cpu()
                            for i in range(0, len(flat), batch_size)])
        out[split] = mapped.unflatten(0, tensor.shape[:2])
    model.train(was_training)
    return out


def loaders_over(cached: dict[str, torch.Tensor], image_loaders: Loaders, *, seed: int) -> Loaders:
    """Train/val loaders over cached tensors, with the image loaders' samplers (same order, same shards);
    the test loader stays on images: the final evaluation runs the whole model."""
    loaders = {}
    for split, tensor in cached.items():
        images = image_loaders[split]
        loaders[split] = DataLoader(FeatureDataset(tensor, images.dataset.targets), batch_size=images.batch_size,
                                    sampler=images.sampler, drop_last=images.drop_last, pin_memory=images.pin_memory,
                                    generator=torch.Generator().manual_seed(seed))
    # cached tensors are already finished (float, normalised); the test images keep their own finish,
    # which only moves float batches
    return image_loaders.replace(loaders, finish=BatchFinish())


def feature_loaders(prepared: PreparedData, image_loaders: Loaders, model: nn.Module, data: DataConfig, *,
                    views: int, seed: int, mean: Sequence[float], std: Sequence[float], device: torch.device,
                    reporter: Reporter | None = None, store: FeatureStore | None = None,
                    store_key: Hashable | None = None) -> Loaders:
    """Train/val loaders over cached pooled features (see :func:`cache_inputs` and :func:`loaders_over`)."""
    cached = cache_inputs(prepared, image_loaders, model, data, views=views, seed=seed, mean=mean, std=std,
                          device=device, reporter=reporter, store=store, store_key=store_key)
    return loaders_over(cached, image_loaders, seed=seed)
