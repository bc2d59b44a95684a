"""The unlabelled pool of ``plantpheno data suggest``: which images it holds, which can be used, and which not.

A pool is an image folder or a CSV with a ``path`` column. Images already in the run's splits are left out (by
file and by content), unreadable ones are listed and skipped, and so are exact or near duplicates of a labelled
image (the data doctor's decoded-pixel hash, perceptual hash and colour-thumbnail test). A pool that does not
look like the run's data (another band layout, images at another scale) is refused with one message.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from plantpheno.files.csvfile import read_csv
from plantpheno.data.doctor.duplicates import CONFIRM_SIMILARITY, close_pairs
from plantpheno.data.doctor.pixels import ImageStats, colour_thumb, thumb_similarity
from plantpheno.data.images import ImageCheck, check_images
from plantpheno.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
SCALE_LIMIT = 2.0  # a pool whose median shorter side is more than this factor from the run's is another scale
LAYOUT_SAMPLE = 200  # labelled images whose band layout is read (headers only) to learn the run's layouts
_GREY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


@dataclass(frozen=True)
class Labelled:
    """One row of the run's split manifest."""

    path: Path
    target: str
    split: str
    group: str | None


@dataclass
class Pool:
    """The usable pool images (with their checks, which carry the content hash and pixel measures) and the
    images left out, each with why."""

    checks: list[ImageCheck]
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def paths(self) -> list[Path]:
        return [c.path for c in self.checks]


def list_pool(source: Path) -> list[Path]:
    """The pool's files: every image under a folder (hidden ones skipped), or the ``path`` column of a CSV
    (relative paths from the CSV's folder)."""
    if source.is_dir():
        return sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                      and not any(part.startswith(".") for part in p.relative_to(source).parts))
    if not source.is_file():
        raise DataError(f"--pool {source} does not exist; expected an image folder or a CSV with a path column")
    if source.suffix.lower() != ".csv":
        raise DataError(f"--pool {source} is a file but not a .csv; expected an image folder or a CSV with a path "
                        f"column")
    with read_csv(source) as reader:
        if "path" not in (reader.fieldnames or []):
            raise DataError(f"--pool {source}: no 'path' column (columns: {', '.join(reader.fieldnames or [])}); "
                            f"expected a CSV with a path column")
        return [p if p.is_absolute() else source.parent / p
                for p in (Path(row["path"]) for row in reader if row.get("path"))]


def _key(path: Path) -> str:
    return os.path.normpath(os.path.abspath(path))


def read_pool(source: Path, labelled: Sequence[Labelled], labelled_checks: Sequence[ImageCheck], *,
              memo: Path | None, near_distance: int, max_pixels: int | None) -> Pool:
    """The usable images of ``source``: not in the run's splits (``labelled``: every row of them), readable, not a
    copy of a labelled image (``labelled_checks``: the readable ones, test split included: a copy of a test image
    labelled for training would leak), and of a band layout the run was trained on. Raises :class:`DataError` for
    an empty pool and for a pool of another band layout or image scale than the run's."""
    files = list_pool(source)
    known = {_key(e.path) for e in labelled}
    fresh = list(dict.fromkeys(p for p in files if _key(p) not in known))
    if not fresh:
        why = (f"all {len(files)} of its images are already in the run's splits" if files else "it holds no images "
               f"({', '.join(IMAGE_EXTENSIONS)})")
        raise DataError(f"--pool {source} is empty: {why}; nothing to suggest")
    checks = check_images(fresh, memo=memo, max_pixels=max_pixels)
    pool = Pool([c for c in checks if c.problem is None], [(c.path, f"unreadable: {c.problem}") for c in checks
                                                          if c.problem is not None])
    if not pool.checks:
        raise DataError(f"--pool {source}: none of its {len(checks)} new images can be read (first: "
                        f"{pool.skipped[0][0]}: {pool.skipped[0][1]}); nothing to suggest")
    _drop_other_layouts(pool, labelled_checks, source)
    _check_scale(pool, labelled_checks, source)
    _drop_copies(pool, labelled_checks, near_distance)
    if not pool.checks:
        raise DataError(f"--pool {source}: every new image is a copy of a labelled one ({len(pool.skipped)} "
                        f"skipped); nothing to suggest")
    return pool


def band_layout(path: Path) -> str:
    """``grey`` (one band, with or without alpha) or ``colour``, from the file's header."""
    try:
        with Image.open(path) as img:
            return "grey" if img.mode in _GREY_MODES else "colour"
    except Exception:  # noqa: BLE001 - the check pass read it; a race shows as its own layout
        return "unknown"


def _drop_other_layouts(pool: Pool, labelled: Sequence[ImageCheck], source: Path) -> None:
    step = max(1, len(labelled) // LAYOUT_SAMPLE)
    seen = {band_layout(c.path) for c in labelled[::step]}
    layouts = [band_layout(c.path) for c in pool.checks]
    if not any(layout in seen for layout in layouts):
        found = sorted(set(layouts))
        raise DataError(f"--pool {source}: its images are {'/'.join(found)} but the run was trained on "
                        f"{'/'.join(sorted(seen))} images (e.g. {pool.checks[0].path}); a model's features of "
                        f"another band layout say nothing about what to label: use a pool like the run's data, or "
                        f"train a run on images like these")
    keep = [c for c, layout in zip(pool.checks, layouts) if layout in seen]
    pool.skipped += [(c.path, f"{layout} image; the run was trained on {'/'.join(sorted(seen))} images")
                     for c, layout in zip(pool.checks, layouts) if layout not in seen]
    pool.checks = keep


def _median_side(checks: Sequence[ImageCheck]) -> float | None:
    sides = [min(c.stats.width, c.stats.height) for c in checks if c.stats is not None]
    return statistics.median(sides) if sides else None


def _check_scale(pool: Pool, labelled: Sequence[ImageCheck], source: Path) -> None:
    ours, theirs = _median_side(pool.checks), _median_side(labelled)
    if ours is None or theirs is None:
        return
    if max(ours / theirs, theirs / ours) > SCALE_LIMIT:
        raise DataError(f"--pool {source}: its images are {ours:.0f} px on their shorter side (median), the run's "
                        f"{theirs:.0f} px: more than {SCALE_LIMIT:g}x apart, so leaves appear at another scale than "
                        f"the model learnt from; resize the pool to the run's image size (about {theirs:.0f} px), "
                        f"or train a run on images like these")


def _drop_copies(pool: Pool, labelled_checks: Sequence[ImageCheck], near_distance: int) -> None:
    """Leave out exact copies (same decoded pixels) and confirmed near duplicates of labelled images, and repeats of
    one picture within the pool."""
    by_pixels = {c.stats.pixel_hash: c.path for c in labelled_checks if c.stats is not None}
    copy_of: dict[int, str] = {}
    first_in_pool: dict[str, Path] = {}
    for i, c in enumerate(pool.checks):
        if c.stats is None:
            continue
        if c.stats.pixel_hash in by_pixels:
            copy_of[i] = f"same picture as labelled {by_pixels[c.stats.pixel_hash]}"
        elif c.stats.pixel_hash in first_in_pool:  # one picture twice in the pool: suggest it once
            copy_of[i] = f"same picture as pool image {first_in_pool[c.stats.pixel_hash]}"
        else:
            first_in_pool[c.stats.pixel_hash] = c.path
    hashed: list[tuple[Path, ImageStats]] = [(c.path, c.stats) for c in labelled_checks if c.stats is not None]
    ours = [(i, c.stats) for i, c in enumerate(pool.checks) if c.stats is not None and i not in copy_of]
    values = np.array([int(s.phash, 16) for _, s in hashed] + [int(s.phash, 16) for _, s in ours], dtype=np.uint64)
    for a, b in close_pairs(values, near_distance):
        if a >= len(hashed) or b < len(hashed):
            continue  # a pair within the labelled images, or within the pool
        (path, mine), (i, theirs) = hashed[a], ours[b - len(hashed)]
        ta, tb = colour_thumb(mine), colour_thumb(theirs)
        if i not in copy_of and ta is not None and tb is not None and thumb_similarity(ta, tb) >= CONFIRM_SIMILARITY:
            copy_of[i] = f"near duplicate of labelled {path}"
    pool.skipped += [(pool.checks[i].path, why) for i, why in sorted(copy_of.items())]
    pool.checks = [c for i, c in enumerate(pool.checks) if i not in copy_of]


def read_labelled(manifest: Path) -> list[Labelled]:
    """The run's split manifest (``path``, ``label`` or ``value``, ``split``, ``group``)."""
    with read_csv(manifest) as reader:
        target = "label" if "label" in (reader.fieldnames or []) else "value"
        return [Labelled(Path(r["path"]), r[target], r["split"], r.get("group") or None) for r in reader]
