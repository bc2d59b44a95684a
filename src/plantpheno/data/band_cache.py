"""``data.cache`` for ``data.bands``: every band image read once, kept as float32 file values.

What is stored: each image's bands as :func:`~plantpheno.data.bands.read_bands` returns them (float32
``(H, W, C)``, the file's own values at the file's own size, derived bands computed), *before* the per-band
clipping and standardisation, which run on every read (a few operations per pixel). float32 holds every level of
an 8- or 16-bit band exactly, so nothing of a 16-bit band is lost; and since the stored values do not depend on
the training split's statistics, a new split or recomputed statistics never make a cache stale. The cached and
the uncached paths therefore give the very same tensors.

``memory``: one buffer in anonymous shared memory per split (forked workers share its pages, as the RGB cache).
``disk``: ``OUTPUT_DIR/.cache/bands-<key>.f32`` memory-mapped read-only, with ``bands-<key>.json`` written last
(a crash leaves no cache that looks complete). The key hashes the dataset fingerprint (the contents of every
image and band file), the paths of the images and their band files, the band specs (names, channels, sources,
derived bands) and the format version, so another band set or a changed file never reads a stale cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mmap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from plantpheno.band_config import BandSpec
from plantpheno.data.bands import read_bands
from plantpheno.files.atomic import atomic_open, atomic_write_text
from plantpheno.reporting import Reporter

log = logging.getLogger(__name__)

BAND_CACHE_FORMAT = 1


class BandCache:
    """float32 band images ``(H, W, C)`` of a sequence of images in one flat buffer (or a ``.f32`` file each
    process maps lazily; a pickled cache carries the path, not the pixels)."""

    def __init__(self, shapes: np.ndarray, *, pixels: np.ndarray | None = None, path: Path | None = None) -> None:
        if (pixels is None) == (path is None):
            raise ValueError("BandCache needs exactly one of pixels or path")
        self.shapes = np.asarray(shapes, dtype=np.int64).reshape(-1, 3)
        self.offsets = np.concatenate([[0], np.cumsum(self.shapes.prod(axis=1))]).astype(np.int64)
        self.path, self._pixels = path, pixels

    @property
    def nbytes(self) -> int:
        return int(self.offsets[-1]) * 4

    def __len__(self) -> int:
        return len(self.shapes)

    def array(self, index: int) -> np.ndarray:
        """Image ``index`` as a read-only ``(H, W, C)`` float32 view into the cache."""
        if self._pixels is None:
            assert self.path is not None
            self._pixels = np.memmap(self.path, dtype=np.float32, mode="r", shape=(int(self.offsets[-1]),))
        start, stop = self.offsets[index], self.offsets[index + 1]
        return self._pixels[start:stop].reshape(*(int(v) for v in self.shapes[index]))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.path is not None:
            state["_pixels"] = None  # reopen the mapping in the receiving process
        return state


def band_cache_key(paths: Sequence[Path], companions: Sequence[Mapping[str, Path]], bands: Sequence[BandSpec],
                   fingerprint: str) -> str:
    """What the cached values depend on: file contents (``fingerprint``), which files, which bands read how."""
    identity = {"format": BAND_CACHE_FORMAT, "fingerprint": fingerprint,
                "files": [[str(p), sorted((k, str(v)) for k, v in c.items())] for p, c in zip(paths, companions)],
                "bands": [b.model_dump(mode="json", exclude_none=True) for b in bands]}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode("utf-8", "surrogateescape")).hexdigest()[:32]


def build_band_cache(paths: Sequence[Path], companions: Sequence[Mapping[str, Path]], bands: Sequence[BandSpec], *,
                     mode: str, fingerprint: str, directory: Path | None = None, reporter: Reporter | None = None,
                     desc: str = "caching band images") -> BandCache:
    """Read ``paths`` (with their band files) once into a :class:`BandCache` (``mode``: memory or disk; disk
    needs ``directory`` and reuses a complete cache there whose key matches)."""
    if mode not in ("memory", "disk") or (mode == "disk" and directory is None):
        raise ValueError(f"build_band_cache: mode must be 'memory' or 'disk' (with a directory), got {mode!r}")
    key = band_cache_key(paths, companions, bands, fingerprint)
    if mode == "disk":
        assert directory is not None
        found = _open(directory, key, len(paths))
        if found is not None:
            log.info("band cache: reusing %s (%d images)", found.path, len(found))
            return found
    bar = reporter.progress(total=len(paths), desc=desc, unit="img") if reporter is not None else None
    try:
        if mode == "memory":
            arrays = []
            for path, extra in zip(paths, companions):
                arrays.append(read_bands(path, bands, max_pixels=None, companions=extra))
                if bar is not None:
                    bar.update(1)
            shapes = np.array([a.shape for a in arrays], dtype=np.int64).reshape(-1, 3)
            total = int(shapes.prod(axis=1).sum())
            pixels = np.frombuffer(mmap.mmap(-1, total * 4), dtype=np.float32) if total else np.empty(0, np.float32)
            cache = BandCache(shapes, pixels=pixels)
            for i, a in enumerate(arrays):
                pixels[cache.offsets[i]:cache.offsets[i + 1]] = a.reshape(-1)
            return cache
        return _write(directory, key, paths, companions, bands, bar)  # type: ignore[arg-type]
    finally:
        if bar is not None:
            bar.close()


def _open(directory: Path, key: str, count: int) -> BandCache | None:
    index_path, data_path = directory / f"bands-{key}.json", directory / f"bands-{key}.f32"
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
        cache = BandCache(np.array(index["shapes"], dtype=np.int64).reshape(-1, 3), path=data_path)
        size = data_path.stat().st_size
    except (OSError, ValueError, KeyError):
        return None
    if index.get("key") != key or len(cache) != count or size != cache.nbytes:
        return None
    return cache


def _write(directory: Path, key: str, paths: Sequence[Path], companions: Sequence[Mapping[str, Path]],
           bands: Sequence[BandSpec], bar: Any) -> BandCache:
    data_path, shapes = directory / f"bands-{key}.f32", []
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_open(data_path, "wb") as fh:  # a temporary file, renamed only once complete
        for path, extra in zip(paths, companions):
            pixels = np.ascontiguousarray(read_bands(path, bands, max_pixels=None, companions=extra), np.float32)
            shapes.append(pixels.shape)
            fh.write(pixels.data)
            if bar is not None:
                bar.update(1)
    cache = BandCache(np.array(shapes, dtype=np.int64).reshape(-1, 3), path=data_path)
    index = {"format": BAND_CACHE_FORMAT, "key": key, "count": len(paths), "nbytes": cache.nbytes,
             "shapes": [list(s) for s in shapes]}
    atomic_write_text(directory / f"bands-{key}.json", json.dumps(index) + "\n")  # last: marks it complete
    log.info("band cache: wrote %d images to %s (%.1f MB)", len(paths), data_path, cache.nbytes / 1e6)
    return cache
