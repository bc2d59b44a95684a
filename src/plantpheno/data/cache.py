"""Decoded-image cache (``data.cache``): decode, orient and resize every image once, keep uint8 pixels.

Without a cache each epoch re-reads, re-decodes and re-resizes every file. With one, each image is
decoded once (EXIF orientation applied, converted to 8-bit RGB by :func:`~plantpheno.data.images.load_rgb`)
and resized once with torchvision's own ``Resize`` — the first, deterministic step of the transforms —
and the transforms run on the stored pixels from there on; random augmentations are still drawn
afresh every epoch from each sample's seed.

What is stored, per split (see :func:`cache_spec`):

* val/test, and training without a random resized crop: exactly what the evaluation's resize makes
  (``data.resize``: ``crop`` shorter side = ``image_size``, aspect kept; ``pad`` longer side = ``image_size``,
  aspect kept, the letterbox added later; ``stretch`` ``image_size`` square). Evaluation therefore sees the
  very same pixels with and without a cache (the resize leaves an image that already has that size untouched).
* training with a random resized crop: that side = ``ceil(1.15 * image_size)``, so crops of 60-100 %
  of the image are resampled from a little more than the output resolution. Smaller images are enlarged
  to it once here, so that every training square has the same side and a batch stacks without resizing
  (format 1 kept them small and the batched augmentation resized each one every epoch: 0.43 ms per
  256 px PlantVillage image at 224 px, a quarter of the loader's work).

All images of a split live in one flat uint8 buffer (variable sizes, one offset each):

* ``memory``: one array allocated once before the DataLoader workers start; Linux forks them, so
  they share its pages (copy-on-write, never written). Where workers are spawned (macOS, Windows)
  each worker would get a copy: use ``disk`` there.
* ``disk``: ``OUTPUT_DIR/.cache/<key>.u8`` memory-mapped read-only by every process (the OS page
  cache shares it), with ``<key>.json`` describing it. The key hashes the dataset fingerprint
  (file contents), the image paths, the resize settings (size and ``data.resize``) and the PIL/torchvision
  versions, so a changed image, split, ``image_size`` or resize mode never reads a stale cache. Both files are written
  atomically, the index last: a crash leaves no cache that looks complete. Old caches are not
  deleted automatically: remove ``OUTPUT_DIR/.cache`` to reclaim the space.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import mmap
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from plantpheno.files.atomic import atomic_open, atomic_write_text
from plantpheno.config import DataConfig
from plantpheno.data.images import load_rgb
from plantpheno.errors import DataError
from plantpheno.reporting import Progress, Reporter

log = logging.getLogger(__name__)

CACHE_DIR = ".cache"
FORMAT_VERSION = 2  # 2: training images smaller than the margin size are enlarged to it
TRAIN_MARGIN = 1.15  # training crops are resampled from a slightly larger image than they end up
_WRITE_CHUNK = 256  # images decoded in RAM before being appended to a disk cache


@dataclass(frozen=True)
class CacheSpec:
    """How cached images are sized, by ``data.resize``: ``crop`` keeps the aspect with the shorter side at
    ``side``; ``pad`` keeps it with the longer side at ``side`` (the letterbox is added when a square is made,
    not stored); ``stretch`` stores ``side`` x ``side``. Larger and smaller images alike."""

    side: int
    resize: str = "crop"


def cache_spec(data: DataConfig, *, train: bool) -> CacheSpec:
    """The stored size for a split: the eval resize, or a 15 % margin for random-crop training (a
    ``keep_whole`` augmentation zooms out, never in: it needs no margin)."""
    augment = data.augment
    random_crop = (train and augment.enabled and tuple(augment.crop_scale) != (1.0, 1.0)
                   and not augment.keep_whole)
    if random_crop:
        return CacheSpec(math.ceil(data.image_size * TRAIN_MARGIN), data.resize)
    return CacheSpec(data.image_size, data.resize)


def resized_shape(width: int, height: int, spec: CacheSpec) -> tuple[int, int]:
    """(height, width) after the cache's resize: torchvision's rule for ``Resize(int)`` (crop), for
    ``Resize(None, max_size=side)`` (pad), or ``(side, side)`` (stretch)."""
    if spec.resize == "stretch":
        return spec.side, spec.side
    short, long = (width, height) if width <= height else (height, width)
    if spec.resize == "pad":
        if long == spec.side:
            return height, width
        new_long, new_short = spec.side, max(1, int(spec.side * short / long))
    else:
        if short == spec.side:
            return height, width
        new_short, new_long = spec.side, int(spec.side * long / short)
    return (new_long, new_short) if width <= height else (new_short, new_long)


def resize_image(image: Image.Image, spec: CacheSpec) -> Image.Image:
    """``image`` resized as ``spec`` says (the same image when it already has that size): the first,
    deterministic step of the evaluation transform, with torchvision's own resize."""
    from torchvision.transforms.v2 import functional as F  # same implementation as the transforms' Resize

    height, width = resized_shape(image.width, image.height, spec)
    if (height, width) == (image.height, image.width):
        return image
    size = [spec.side] if spec.resize == "crop" else [height, width]
    return F.resize(image, size, antialias=True)


def decode_resized(path: Path, spec: CacheSpec) -> np.ndarray:
    """Decode ``path`` to 8-bit RGB and resize it as the cache stores it: an (H, W, 3) uint8 array."""
    # a large JPEG decodes at a reduced scale (draft mode) that keeps the shorter side >= spec.side, enough for
    # every resize mode (crop and stretch need it; pad, whose longer side goes to spec.side, needs less)
    return np.asarray(resize_image(load_rgb(path, min_side=spec.side), spec), dtype=np.uint8)


def _planned_shape(path: Path, spec: CacheSpec) -> tuple[int, int]:
    """The stored (height, width) of ``path``, from its header alone (EXIF rotations swap the sides)."""
    with Image.open(path) as image:
        width, height = image.size
        if image.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # orientations that transpose the image
            width, height = height, width
    return resized_shape(width, height, spec)


class ImageCache:
    """uint8 RGB pixels of a sequence of images in one flat buffer; ``image(i)`` returns image ``i``.

    Holds either an in-memory array or the path of a ``.u8`` file that each process maps lazily
    (a pickled cache, e.g. sent to a spawned worker, carries the path, not the pixels).
    """

    def __init__(self, shapes: np.ndarray, *, pixels: np.ndarray | None = None, path: Path | None = None) -> None:
        if (pixels is None) == (path is None):
            raise ValueError("ImageCache needs exactly one of pixels or path")
        self.shapes = np.asarray(shapes, dtype=np.int64).reshape(-1, 2)
        sizes = self.shapes[:, 0] * self.shapes[:, 1] * 3
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.path = path
        self._pixels = pixels

    @property
    def nbytes(self) -> int:
        return int(self.offsets[-1])

    def __len__(self) -> int:
        return len(self.shapes)

    def _flat(self) -> np.ndarray:
        if self._pixels is None:
            assert self.path is not None
            self._pixels = np.memmap(self.path, dtype=np.uint8, mode="r", shape=(self.nbytes,))
        return self._pixels

    def array(self, index: int) -> np.ndarray:
        """Image ``index`` as a read-only (H, W, 3) view into the cache."""
        height, width = self.shapes[index]
        start, stop = self.offsets[index], self.offsets[index + 1]
        return self._flat()[start:stop].reshape(int(height), int(width), 3)

    def image(self, index: int) -> Image.Image:
        """Image ``index`` as a PIL RGB image (a copy: transforms may not write into the cache)."""
        return Image.fromarray(self.array(index))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.path is not None:
            state["_pixels"] = None  # reopen the mapping in the receiving process
        return state


def shared_buffer(nbytes: int) -> np.ndarray:
    """A uint8 array in anonymous shared memory (``MAP_SHARED``), for the memory cache.

    Forked DataLoader workers then map the very same pages. A plain ``np.empty`` array is private
    copy-on-write memory that NumPy marks for transparent huge pages (``MADV_HUGEPAGE`` on arrays of 4 MiB
    and more). khugepaged then collapses the inherited pages into private huge pages in each worker, which
    copies them. Measured at 128 px, PSS summed over the processes: it crept from 899 to 1001 MiB over 12
    epochs, against a plateau at 932 MiB with the memory-mapped disk cache.
    """
    if nbytes == 0:
        return np.empty(0, dtype=np.uint8)
    return np.frombuffer(mmap.mmap(-1, nbytes), dtype=np.uint8)


def build_image_cache(paths: Sequence[Path], spec: CacheSpec, *, mode: str, fingerprint: str,
                      directory: Path | None = None, workers: int | None = None,
                      reporter: Reporter | None = None, desc: str = "caching images") -> ImageCache:
    """Decode and resize ``paths`` once into an :class:`ImageCache` (``mode``: ``memory`` or ``disk``).

    ``fingerprint`` must change whenever the images' contents change (the dataset fingerprint);
    ``disk`` needs ``directory`` and reuses a complete cache there whose key matches. ``reporter`` shows the
    decoding's progress (``desc``).
    """
    paths = [Path(p) for p in paths]
    if mode == "memory":
        shapes = _plan(paths, spec, workers)
        pixels = shared_buffer(int((shapes[:, 0] * shapes[:, 1] * 3).sum()))
        cache = ImageCache(shapes, pixels=pixels)
        with _progress(reporter, len(paths), desc) as bar:
            _fill(pixels, cache, paths, spec, workers, bar=bar)
        return cache
    if mode != "disk" or directory is None:
        raise ValueError(f"build_image_cache: mode must be 'memory' or 'disk' (with a directory), got {mode!r}")
    key = cache_key(paths, spec, fingerprint)
    cached = _open_disk_cache(directory, key, len(paths))
    if cached is not None:
        log.info("image cache: reusing %s (%d images)", cached.path, len(cached))
        return cached
    with _progress(reporter, len(paths), desc) as bar:
        return _write_disk_cache(directory, key, paths, spec, workers, bar)


@contextlib.contextmanager
def _progress(reporter: Reporter | None, total: int, desc: str) -> Iterator[Progress | None]:
    bar = reporter.progress(total=total, desc=desc, unit="img") if reporter is not None else None
    try:
        yield bar
    finally:
        if bar is not None:
            bar.close()


def cache_key(paths: Sequence[Path], spec: CacheSpec, fingerprint: str) -> str:
    """A hash of everything the stored pixels depend on."""
    import PIL
    import torchvision

    material = {"format": FORMAT_VERSION, "fingerprint": fingerprint, "short_side": spec.side,
                "pil": PIL.__version__, "torchvision": torchvision.__version__,
                "paths": [str(Path(p).resolve()) for p in paths]}
    if spec.resize != "crop":  # crop-mode keys stay as they were: existing caches remain valid
        material["resize"] = spec.resize
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:32]


def _plan(paths: list[Path], spec: CacheSpec, workers: int | None) -> np.ndarray:
    def plan_one(path: Path) -> tuple[int, int]:
        try:
            return _planned_shape(path, spec)
        except OSError as exc:
            raise DataError(f"image cache: cannot read {path} ({exc}); did it change after the data check?") from None

    with ThreadPoolExecutor(max_workers=_threads(workers)) as pool:
        return np.array(list(pool.map(plan_one, paths)), dtype=np.int64).reshape(-1, 2)


def _fill(buffer: np.ndarray, cache: ImageCache, paths: list[Path], spec: CacheSpec, workers: int | None,
          indices: range | None = None, bar: Progress | None = None) -> None:
    """Decode images ``indices`` (default: all) into ``buffer``, which starts at the first one's offset.

    Threads, because decoding and resizing release the GIL.
    """
    indices = range(len(paths)) if indices is None else indices
    base = cache.offsets[indices.start] if len(indices) else 0

    def fill_one(index: int) -> None:
        try:
            pixels = decode_resized(paths[index], spec)
        except OSError as exc:
            raise DataError(f"image cache: cannot decode {paths[index]} ({exc})") from None
        expected = tuple(int(v) for v in cache.shapes[index])
        if pixels.shape[:2] != expected:
            raise DataError(f"image cache: {paths[index]} decoded to {pixels.shape[:2]}, its header said {expected}")
        buffer[cache.offsets[index] - base:cache.offsets[index + 1] - base] = pixels.reshape(-1)

    with ThreadPoolExecutor(max_workers=_threads(workers)) as pool:
        for _ in pool.map(fill_one, indices):
            if bar is not None:
                bar.update(1)


def _threads(workers: int | None) -> int:
    return workers or min(8, os.cpu_count() or 1)


def _open_disk_cache(directory: Path, key: str, count: int) -> ImageCache | None:
    index_path, data_path = directory / f"{key}.json", directory / f"{key}.u8"
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
        shapes = np.array(index["shapes"], dtype=np.int64).reshape(-1, 2)
        size = data_path.stat().st_size
    except (OSError, ValueError, KeyError):
        return None
    cache = ImageCache(shapes, path=data_path)
    if index.get("key") != key or len(cache) != count or size != cache.nbytes or index.get("nbytes") != size:
        return None
    return cache


def _write_disk_cache(directory: Path, key: str, paths: list[Path], spec: CacheSpec,
                      workers: int | None, bar: Progress | None = None) -> ImageCache:
    shapes = _plan(paths, spec, workers)
    data_path = directory / f"{key}.u8"
    cache = ImageCache(shapes, path=data_path)
    log.info("image cache: decoding %d images into %s (%.1f MB)", len(paths), data_path, cache.nbytes / 1e6)
    with atomic_open(data_path, "wb") as fh:  # a temporary file, renamed only once complete
        for start in range(0, len(paths), _WRITE_CHUNK):
            chunk = range(start, min(start + _WRITE_CHUNK, len(paths)))
            buffer = np.empty(int(cache.offsets[chunk.stop] - cache.offsets[chunk.start]), dtype=np.uint8)
            _fill(buffer, cache, paths, spec, workers, chunk, bar)
            fh.write(buffer.data)
    index = {"format": FORMAT_VERSION, "key": key, "side": spec.side, "resize": spec.resize,
             "count": len(paths), "nbytes": cache.nbytes, "shapes": shapes.tolist()}
    atomic_write_text(directory / f"{key}.json", json.dumps(index) + "\n")  # last: marks the cache complete
    return cache


def split_cache(paths: Sequence[Path], data: DataConfig, *, train: bool, fingerprint: str,
                output_dir: Path, reporter: Reporter | None = None, split: str = "") -> ImageCache | None:
    """The cache ``data.cache`` asks for, for one split's images; None for ``none``."""
    if data.cache == "none" or not paths:
        return None
    return build_image_cache(paths, cache_spec(data, train=train), mode=data.cache, fingerprint=fingerprint,
                             directory=output_dir / CACHE_DIR, reporter=reporter,
                             desc=f"caching {split} images".replace("  ", " "))
