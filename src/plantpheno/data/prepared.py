"""From a config to checked, split samples: read the source (an image folder or a CSV manifest), check every image,
split, fingerprint; and the run folder's record of them (``split.csv``, ``dataset.json``, ``bad_images.csv``).

The DataLoaders over these samples live in :mod:`plantpheno.data.datasets`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from plantpheno.config import Config
from plantpheno.band_config import band_columns
from plantpheno.data.band_stats import BandImageStats, odd_sample_types
from plantpheno.data.bands import BandNorm, band_check, band_statistics, drop_band_files
from plantpheno.data.cache import CACHE_DIR
from plantpheno.data.doctor.pixels import ImageStats
from plantpheno.data.images import check_images
from plantpheno.data.sources import (
    SPLITS, Columns, Sample, class_names_of, ignored_columns, links_outside, read_folder, read_manifest)
from plantpheno.data.splits import assign_splits
from plantpheno.errors import DataError
from plantpheno.files.atomic import atomic_write_text
from plantpheno.files.csvfile import write_csv
from plantpheno.reporting import Reporter
from plantpheno.run.folder import RunDir

IMAGE_CHECK_MEMO = "checks/images.json"  # under OUTPUT_DIR/.cache: files already checked (size, mtime, hash)


@dataclass(frozen=True)
class PreparedData:
    """Checked samples per split, class names, fingerprint, the files that were skipped, and the pixel measures
    of each image (for the data checks)."""

    task: str
    splits: dict[str, list[Sample]]
    class_names: list[str] | None
    fingerprint: str
    bad_files: list[tuple[Path, str]] = field(default_factory=list)
    stats: dict[Path, ImageStats] = field(default_factory=dict)
    # symlinked class folders or images of a folder dataset that lead outside data.root: (link, target)
    links_outside_root: list[tuple[Path, Path]] = field(default_factory=list)
    links_policy: str = "follow"
    band_norm: BandNorm | None = None  # with data.bands: per-band scaling from the training split
    band_columns: tuple[tuple[str, str], ...] = ()  # (band, manifest column) of bands with files of their own
    band_stats: dict[Path, BandImageStats] = field(default_factory=dict)  # with data.bands: per-band measures

    def targets(self, split: str) -> list[int] | list[float]:
        """Class indices (classification) or float values (regression) of one split."""
        if self.class_names is None:
            return [float(s.target) for s in self.splits[split]]
        index = {name: i for i, name in enumerate(self.class_names)}
        return [index[str(s.target)] for s in self.splits[split]]

    def is_count_trait(self) -> bool:
        """Whether the trait is a count: every training value a whole number."""
        return self.class_names is None and all(float(v).is_integer() for v in self.targets("train"))

    def target_stats(self) -> tuple[float, float]:
        """Mean and std of the training targets (regression outputs are learned standardised)."""
        values = torch.tensor(self.targets("train"), dtype=torch.float64)
        std = float(values.std(unbiased=False)) if len(values) > 1 else 1.0
        return float(values.mean()), std if std > 0 else 1.0


def prepare_data(config: Config, *, manifest_override: Path | None = None,
                 reporter: Reporter | None = None) -> PreparedData:
    """Read the dataset, check every image, split it, fingerprint it.

    ``manifest_override`` (a run's saved ``split.csv``) replaces the configured source, so a
    resumed or re-evaluated run sees exactly the images and split it was trained with. ``reporter`` shows
    the image check's progress.
    """
    data = config.data
    links: list[tuple[Path, Path]] = []
    by_column = band_columns(data.bands)  # one file per band, named in manifest columns (split.csv keeps them)
    if manifest_override is not None:
        samples = read_manifest(manifest_override, root=None, task=config.task, exact=True, band_columns=by_column)
    elif data.manifest is not None:
        columns = Columns(data.path_column, data.label_column, data.value_column, data.split_column, data.group_column)
        samples = read_manifest(data.manifest, root=data.root, task=config.task, columns=columns,
                                band_columns=by_column)
        _note_ignored_columns(data.manifest, config.task, columns, reporter, by_column)
    else:
        assert data.root is not None  # guaranteed by the config schema
        samples = read_folder(data.root, extensions=data.extensions)
        samples, links = _apply_link_policy(samples, data.root, data.links_outside_root)
        if data.bands is not None:  # a folder's band files (by pattern) are bands of their image, not images
            kept = set(drop_band_files([s.path for s in samples], data.bands))
            samples = [s for s in samples if s.path in kept]
    companions_of = companions_by_path(samples)
    check = band_check(data.bands, data.max_image_pixels, companions_of)  # None: RGB
    samples, bad, fingerprint, stats, by_band = _check(
        samples, skip_bad=data.on_bad_image == "skip", memo=config.output_dir / CACHE_DIR / IMAGE_CHECK_MEMO
        if check is None else None, max_pixels=data.max_image_pixels, reporter=reporter, check=check)
    if all(s.split is not None for s in samples):
        splits = {name: [s for s in samples if s.split == name] for name in SPLITS}
        missing = [name for name in SPLITS if not splits[name]]
        if missing:
            raise DataError(f"the split column has no {' or '.join(missing)} rows; each of train, val, test needs images")
    else:
        names = assign_splits([s.target for s in samples], [s.group for s in samples], task=config.task,
                              val_fraction=data.val_fraction, test_fraction=data.test_fraction, seed=config.seed)
        splits = {name: [s for s, n in zip(samples, names) if n == name] for name in SPLITS}
    class_names = class_names_of(samples) if config.task == "classification" else None
    if class_names is not None and len(class_names) < 2:
        raise DataError(f"classification needs at least 2 classes, found {class_names}")
    norm = (band_statistics([s.path for s in splits["train"]], data.bands, seed=config.seed,
                            companions_of=companions_of) if data.bands else None)
    return PreparedData(config.task, splits, class_names, fingerprint, bad, stats=stats, links_outside_root=links,
                        links_policy=data.links_outside_root, band_norm=norm, band_columns=by_column,
                        band_stats=by_band)


def companions_by_path(samples: list[Sample]) -> dict[Path, dict[str, Path]]:
    """The band files a manifest names (one file per band), by image path; empty without such columns."""
    return {s.path: dict(s.companions) for s in samples if s.companions}


def _note_ignored_columns(manifest: Path, task: str, columns: Columns, reporter: Reporter | None,
                          by_column: tuple[tuple[str, str], ...] = ()) -> None:
    """Say once which of the manifest's columns nothing reads: data the user gave is never ignored without a word."""
    ignored = ignored_columns(manifest, task=task, columns=columns, band_columns=by_column)
    if ignored and reporter is not None:
        grouped = (f"groups come from {columns.group} (data.group_column)" if columns.group != Columns().group
                   else "set data.group_column to group by one (its images then stay in one split)")
        reporter.info(f"{manifest}: ignored columns: {', '.join(ignored)}; {grouped}")


def _apply_link_policy(samples: list[Sample], root: Path, policy: str) -> tuple[list[Sample], list[tuple[Path, Path]]]:
    """What a symlink leading outside ``root`` means (``data.links_outside_root``): follow, skip or error."""
    links = links_outside(samples, root)
    if not links or policy == "follow":
        return samples, links
    if policy == "error":
        listing = "\n  ".join(f"{link} -> {target}" for link, target in links[:50])
        raise DataError(f"data.root {root}: {len(links)} symbolic link(s) lead outside it (data.links_outside_root="
                        f"error; set it to follow to use them, or skip):\n  {listing}")
    leaving = {link for link, _ in links}
    kept = [s for s in samples
            if s.path not in leaving and root / s.path.relative_to(root).parts[0] not in leaving]
    if not kept:
        raise DataError(f"data.root {root}: every image is reached through a symbolic link that leads outside it, "
                        f"and data.links_outside_root=skip")
    return kept, links


def _check(samples: list[Sample], *, skip_bad: bool, memo: Path | None = None, max_pixels: int | None = None,
           reporter: Reporter | None = None, check: Any = None
           ) -> tuple[list[Sample], list[tuple[Path, str]], str, dict[Path, ImageStats], dict[Path, BandImageStats]]:
    checks = check_images([s.path for s in samples], memo=memo, reporter=reporter, check=check,
                          **({"max_pixels": max_pixels} if max_pixels is not None else {}))
    odd = odd_sample_types({c.path: c.band_stats for c in checks if c.band_stats is not None})
    checks = [replace(c, problem=odd[c.path]) if c.path in odd else c for c in checks]
    bad = [(c.path, c.problem) for c in checks if c.problem is not None]
    if bad and not skip_bad:
        listing = "\n  ".join(f"{p}: {why}" for p, why in bad[:200])
        more = f"\n  ... and {len(bad) - 200} more" if len(bad) > 200 else ""
        raise DataError(
            f"{len(bad)} of {len(samples)} image(s) cannot be used (set data.on_bad_image=skip to skip them):\n  "
            f"{listing}{more}"
        )
    good = [(s, c.sha256) for s, c in zip(samples, checks) if c.problem is None]
    if not good:
        raise DataError(f"none of the {len(samples)} images could be read")
    base = Path(os.path.commonpath([str(s.path.parent) for s, _ in good]))
    lines = sorted(f"{s.path.relative_to(base).as_posix()}\t{s.target}\t{sha}" for s, sha in good)
    # file names that are not UTF-8 hash as their bytes (surrogateescape), so every name can be fingerprinted
    fingerprint = hashlib.sha256("\n".join(lines).encode("utf-8", "surrogateescape")).hexdigest()
    stats = {c.path: c.stats for c in checks if c.stats is not None}
    by_band = {c.path: c.band_stats for c in checks if c.band_stats is not None and c.problem is None}
    return [s for s, _ in good], [(p, str(why)) for p, why in bad], fingerprint, stats, by_band


def write_data_files(prepared: PreparedData, run: RunDir) -> None:
    """Write the split manifest (reusable as ``data.manifest``), dataset summary and skipped files."""
    target_col = "label" if prepared.class_names is not None else "value"
    # one file per band from manifest columns: those columns too (under the names data.bands gives them)
    extra = list(prepared.band_columns)
    rows: list[list[object]] = [["path", target_col, "split", "group", *(c for _, c in extra)]]
    # absolute, symlinks kept as links: a resumed run fingerprints the same paths the first run did
    rows += [[os.path.abspath(s.path), s.target, name, s.group or "",
              *(os.path.abspath(dict(s.companions)[band]) for band, _ in extra)]
             for name in SPLITS for s in prepared.splits[name]]
    write_csv(run.split_manifest, rows)
    info = {
        "fingerprint": prepared.fingerprint,
        "task": prepared.task,
        "class_names": prepared.class_names,
        "num_images": {name: len(prepared.splits[name]) for name in SPLITS},
        "class_counts": {
            name: dict(sorted(Counter(str(s.target) for s in prepared.splits[name]).items()))
            for name in SPLITS
        } if prepared.class_names is not None else None,
        "skipped_bad_images": len(prepared.bad_files),
        **({"bands": prepared.band_norm.to_json()} if prepared.band_norm is not None else {}),
        "links_outside_root": {"policy": prepared.links_policy,
                               "links": [{"link": str(link), "target": str(target)}
                                         for link, target in prepared.links_outside_root]},
    }
    if prepared.bad_files:
        write_csv(run.bad_images, [("path", "problem"), *((str(p), why) for p, why in prepared.bad_files)])
    # last: a resume takes split.csv + dataset.json as "the data files are written" (a kill before this rewrites all)
    atomic_write_text(run.dataset_info, json.dumps(info, indent=2) + "\n")


def check_same_data(run: RunDir, prepared: PreparedData) -> None:
    """Refuse to resume or re-evaluate ``run`` on images that changed since it started."""
    recorded = run.read_dataset_info()["fingerprint"]
    if recorded != prepared.fingerprint:
        raise DataError(
            f"the images of {run.path} changed since the run started (dataset fingerprint "
            f"{prepared.fingerprint[:12]} != recorded {recorded[:12]}); start a new run instead of resuming"
        )


def report_links_outside_root(prepared: PreparedData, root: Path | None, reporter: Reporter) -> None:
    """Say which symbolic links of a folder dataset lead outside ``data.root`` and what was done with them."""
    links = prepared.links_outside_root
    if not links:
        return
    policy = prepared.links_policy
    shown = ", ".join(f"{link} -> {target}" for link, target in links[:5]) + (" ..." if len(links) > 5 else "")
    used = "used" if policy == "follow" else "skipped"
    reporter.warning(f"data.root {root}: {len(links)} symbolic link(s) lead outside it and are {used} "
                     f"(data.links_outside_root={policy}; listed in dataset.json): {shown}")
