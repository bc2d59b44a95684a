"""From prepared samples (:mod:`plantpheno.data.prepared`) to DataLoaders.

Reproducibility by construction: the training order of an epoch and every sample's augmentation
seed are drawn from a generator seeded with ``(seed, epoch)``. An epoch can therefore be replayed
(or resumed half-way) exactly, whatever the number of DataLoader workers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from plantpheno.config import DataConfig
from plantpheno.data.batch_augment import (
    BatchAugment,
    BatchedAugmentation,
    BatchFinish,
    Pending,
    augment_batch,
    make_square,
)
from plantpheno.data.cache import ImageCache, cache_spec, decode_resized, split_cache
from plantpheno.data.images import load_rgb
from plantpheno.data.prepared import PreparedData
from plantpheno.data.sources import SPLITS
from plantpheno.data.transforms import eval_transform, train_transform
from plantpheno.device import glibc
from plantpheno.reporting import Reporter


class ImageDataset(Dataset):
    """Images and targets; an item is requested as ``(index, augmentation_seed)``.

    With a ``cache`` (:mod:`plantpheno.data.cache`), image ``i`` comes from ``cache.image(i)``
    instead of being read and decoded from ``paths[i]``.
    """

    def __init__(self, paths: Sequence[Path], targets: Sequence[int] | Sequence[float], transform,
                 *, regression: bool, cache: ImageCache | None = None,
                 batched: BatchedAugmentation | None = None, min_side: int | None = None) -> None:
        self.paths = list(paths)
        self.min_side = min_side  # the shorter side the transform needs: large JPEGs decode at a reduced scale
        self.targets = torch.tensor(targets, dtype=torch.float32 if regression else torch.long)
        self.transform = transform
        self.cache = cache
        # whole batches are augmented at once, in the loader or (on the device) by the training loop's
        # finishing step; see plantpheno.data.batch_augment
        self.batched = batched

    def __len__(self) -> int:
        return len(self.paths)

    def __getitems__(self, items: Sequence[tuple[int, int]]) -> Any:
        """A whole batch (the DataLoader calls this in its worker, then the collate function)."""
        if self.batched is None:
            return [self[item] for item in items]
        batched, spec = self.batched, self.batched.spec
        squares, content = [], []
        for index, _ in items:
            pixels = self.cache.array(index) if self.cache is not None else decode_resized(self.paths[index], spec)
            square, extent = make_square(pixels, spec.side, spec.resize, batched.augment.fill)
            squares.append(square)
            content.append(extent)
        images = augment_batch(batched.augment, squares, [seed for _, seed in items], defer=batched.on_device,
                               content=np.array(content))
        return _Batch((images, self.targets[torch.tensor([index for index, _ in items])]))

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.batched is not None:
            images, targets = self.__getitems__([item])
            if isinstance(images, Pending):
                return Pending(images.pixels[0], images.params[0]), targets[0]
            return images[0], targets[0]
        index, seed = item
        image = (self.cache.image(index) if self.cache is not None
                 else load_rgb(self.paths[index], min_side=self.min_side))
        if torch.utils.data.get_worker_info() is not None:
            torch.manual_seed(seed)  # a worker process's RNG serves only its augmentations
            return self.transform(image), self.targets[index]
        with torch.random.fork_rng(devices=[]):  # keep the main process's RNG stream untouched
            torch.manual_seed(seed)
            return self.transform(image), self.targets[index]


class _Batch(tuple):
    """(images, targets) already stacked by :meth:`ImageDataset.__getitems__`; :func:`collate` passes it on."""


def collate(batch: Any) -> Any:
    """The default collate, except for batches the dataset assembled itself."""
    return tuple(batch) if isinstance(batch, _Batch) else default_collate(batch)


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, augmentation_seed)``; order and seeds depend only on (seed, epoch).

    ``weights`` switches to sampling with replacement (class-balanced sampling). ``start`` skips the
    first samples of the epoch (counted over all ranks), to resume an interrupted epoch exactly. With
    ``world > 1`` rank ``r`` takes epoch positions ``start + r, start + r + world, ...``; ``pad`` repeats
    the first positions so every rank gets the same number of samples (DDP needs equal step counts).
    """

    def __init__(self, size: int, *, seed: int, shuffle: bool, weights: torch.Tensor | None = None,
                 rank: int = 0, world: int = 1, pad: bool = True) -> None:
        self.size, self.seed, self.shuffle, self.weights = size, seed, shuffle, weights
        self.rank, self.world = rank, world
        self.total = -(-size // world) * world if pad else size
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, *, start: int = 0) -> None:
        self.epoch, self.start = epoch, start - start % self.world  # whole rounds of `world` samples

    def _positions(self) -> range:
        return range(self.start + self.rank, self.total, self.world)

    def __len__(self) -> int:
        return len(self._positions())

    def __iter__(self) -> Iterator[tuple[int, int]]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if self.weights is not None:
            order = torch.multinomial(self.weights, self.size, replacement=True, generator=gen)
        elif self.shuffle:
            order = torch.randperm(self.size, generator=gen)
        else:
            order = torch.arange(self.size)
        seeds = torch.randint(0, 2**62, (self.size,), generator=gen)
        for pos in self._positions():
            yield int(order[pos % self.size]), int(seeds[pos % self.size])


def resolve_num_workers(setting: int | str, *, processes_per_machine: int | None = None) -> int:
    """``auto``: half of this process's share of the usable cores (the other half runs the model), at most 8.

    The usable cores honour CPU affinity and a container's CPU quota (:func:`plantpheno.device.usable_cores`),
    shared among the machine's training processes (torchrun's local world): a 2-CPU container on a 64-core
    host gets 1 worker, not 8, and 2 ranks on 16 cores get 4 each.
    """
    if isinstance(setting, int):
        return setting
    from plantpheno.device import usable_cores
    from plantpheno.distributed import local_world_size

    processes = processes_per_machine or local_world_size()
    return max(0, min(8, usable_cores() // max(1, processes) // 2))


@dataclass(frozen=True)
class Loaders(Mapping[str, DataLoader]):
    """The loaders of a run's splits (``loaders["train"]``) and the finishing step their batches need.

    Every consumer moves a batch with ``loaders.finish(images, device)``: it normalises (or augments, on
    the device) the uint8 batches of batched augmentation, and only moves other batches."""

    by_split: dict[str, DataLoader]
    finish: BatchFinish = field(default_factory=BatchFinish)

    def __getitem__(self, split: str) -> DataLoader:
        return self.by_split[split]

    def __iter__(self) -> Iterator[str]:
        return iter(self.by_split)

    def __len__(self) -> int:
        return len(self.by_split)

    def replace(self, loaders: Mapping[str, DataLoader], *, finish: BatchFinish | None = None) -> Loaders:
        """These loaders with some splits' loaders replaced (and their finishing step, if given)."""
        return Loaders({**self.by_split, **loaders}, self.finish if finish is None else finish)

    def on_device(self, split: str, device: torch.device, *,
                  memory_format: torch.memory_format = torch.contiguous_format
                  ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of ``split`` on ``device``, finished (:attr:`finish`): ``(images, targets)``.

        On CUDA the next batch is copied from pinned memory and finished (normalised, or augmented on the device)
        on a side stream while the current step runs on the default stream, which waits for it only when it
        takes that batch. Elsewhere each batch is moved when it is taken: the order and content are the same.
        """
        loader = self.by_split[split]
        if device.type != "cuda":
            for images, targets in loader:
                yield self.finish(images, device, memory_format=memory_format), targets.to(device, non_blocking=True)
            return
        yield from _prefetched(loader, self.finish, device, memory_format)


def _prefetched(loader: DataLoader, finish: BatchFinish, device: torch.device, memory_format: torch.memory_format
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """CUDA only: batch i + 1's copy and finishing step queued on a side stream before batch i is handed out."""
    side = torch.cuda.Stream(device)
    main = torch.cuda.current_stream(device)

    def issue(batch: tuple[Any, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        side.wait_stream(main)  # buffers the main stream freed may be reused here only once it is done with them
        with torch.cuda.stream(side):
            return (finish(batch[0], device, memory_format=memory_format),
                    batch[1].to(device, non_blocking=True))

    batches = iter(loader)
    ahead = next(batches, None)
    queued = issue(ahead) if ahead is not None else None
    while queued is not None:
        main.wait_stream(side)
        images, targets = queued
        # allocated on the side stream, used on the main one: keep the allocator from reusing them too early
        images.record_stream(main)
        targets.record_stream(main)
        ahead = next(batches, None)
        queued = issue(ahead) if ahead is not None else None
        yield images, targets


def build_loaders(prepared: PreparedData, data: DataConfig, *, seed: int, output_dir: Path, mean: Sequence[float],
                  std: Sequence[float], pin_memory: bool = False, rank: int = 0, world: int = 1,
                  splits: Sequence[str] = SPLITS, device_type: str = "cpu",
                  reporter: Reporter | None = None) -> Loaders:
    """A shuffled, augmented train loader and sequential val/test loaders (of ``splits``: only those are
    built, and only their image caches filled), with their finishing step. ``seed`` seeds the epoch orders and
    augmentations; the decoded-image caches live under ``output_dir``.

    With ``world > 1`` the train split is sharded (padded to equal shards) and so is val (not padded: its
    predictions are gathered); test stays whole for the final evaluation on rank 0.
    """
    regression = prepared.class_names is None
    workers = resolve_num_workers(data.num_workers)
    loaders = {}
    finish = BatchFinish()
    for name in splits:
        is_train = name == "train"
        transform = (train_transform(data.image_size, mean, std, data.augment, data.resize) if is_train
                     else eval_transform(data.image_size, mean, std, data.resize))
        targets = prepared.targets(name)
        paths = [s.path for s in prepared.splits[name]]
        # filled here, before the workers start, so forked workers share one copy of the pixels
        cache = split_cache(paths, data, train=is_train, fingerprint=prepared.fingerprint,
                            output_dir=output_dir, reporter=reporter, split=name)
        batched = None
        if is_train and data.augment.enabled and data.augment.batched:
            on_device = data.augment.on_device == "on" or (data.augment.on_device == "auto" and device_type == "cuda")
            batched = BatchedAugmentation(BatchAugment(data.image_size, mean, std, data.augment, data.resize),
                                          cache_spec(data, train=True), on_device)
            finish = BatchFinish(batched.augment)
        dataset = ImageDataset(paths, targets, transform, regression=regression, cache=cache, batched=batched,
                               min_side=cache_spec(data, train=is_train).side)
        weights = _balanced_weights(targets) if is_train and data.class_balanced_sampling else None
        shard = {"rank": rank, "world": world, "pad": is_train} if name != "test" else {}
        sampler = EpochSampler(len(dataset), seed=seed, shuffle=is_train, weights=weights, **shard)
        # a last training batch of one image breaks BatchNorm: drop the ragged tail when training
        drop_last = is_train and len(dataset) > data.batch_size
        # Each iterator draws a base seed from `generator`; a private one keeps the global torch RNG (which
        # drives dropout) untouched, so resuming mid-run replays the same random stream.
        if batched is not None and workers == 0:
            fixed_malloc_mmap_threshold()
        loaders[name] = DataLoader(dataset, batch_size=data.batch_size, sampler=sampler, num_workers=workers,
                                   worker_init_fn=fixed_malloc_mmap_threshold if batched is not None else None,
                                   persistent_workers=workers > 0, pin_memory=pin_memory, drop_last=drop_last,
                                   collate_fn=collate,
                                   generator=torch.Generator().manual_seed(seed))
    return Loaders(loaders, finish)


def _balanced_weights(targets: Sequence[int]) -> torch.Tensor:
    counts = Counter(targets)
    return torch.tensor([1.0 / counts[t] for t in targets], dtype=torch.double)


def fixed_malloc_mmap_threshold(_worker_id: int | None = None) -> None:
    """Fix glibc's malloc thresholds in a process that augments batches, so its memory stays flat.

    By default glibc serves large blocks with mmap until the first one is freed, then raises its mmap
    threshold and serves them from the heap, which fragments: with batched augmentation at 224 px each
    DataLoader worker's private memory grew from 0.01 to 1.3 GiB over 6 epochs (measured). A small fixed
    threshold (1 MiB) kept it flat but returned every batch buffer to the OS, and re-faulting the pages
    halved the images/s. What is used instead: blocks up to 32 MiB always come from the heap, which is
    trimmed only past 512 MiB free, and :func:`~plantpheno.data.batch_augment.augment_batch` works on a
    few images at a time; measured at 224 px: 0.1-0.2 GiB per worker, flat over 6 epochs, ~960 images/s
    on 2 cores. Called in the DataLoader workers (and in the main process when there are none); a no-op
    where the C library is not glibc.
    """
    libc = glibc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
        libc.mallopt(_M_TRIM_THRESHOLD, 512 << 20)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # from glibc's malloc.h


def close_loaders(loaders: Mapping[str, DataLoader]) -> None:
    """Stop the loaders' persistent worker processes now.

    Left to the garbage collector, a finished run's workers (held by reference cycles) are shut down at
    some later collection, inside whatever the program does next; in a loop of runs (tuning, benchmarks)
    that stalled an unrelated run for tens of seconds. Closing them when a run ends makes it prompt.
    """
    for loader in loaders.values():
        iterator = getattr(loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
        loader._iterator = None
