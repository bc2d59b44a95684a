"""``check_data``: every data check on a prepared dataset, in one pass over what the image check measured."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import numpy as np

from plantpheno.data.doctor import bands, duplicates, labels, quality
from plantpheno.data.doctor.catalog import Entry, catalog, distinct_files
from plantpheno.data.doctor.findings import DataCheckReport, Finding
from plantpheno.check_ids import CHECKS, selected
from plantpheno.reporting import Reporter, default_reporter

if TYPE_CHECKING:
    from plantpheno.config import DataConfig
    from plantpheno.data.prepared import PreparedData

MODEL_CHECKS = ("label_errors", "feature_duplicates")
# Band data (data.bands) has no 8-bit RGB picture to measure: exact duplicates and conflicting labels compare the
# images' band values, and these checks, whose measures (luma, perceptual hash, colour thumbnail, border colours,
# ImageNet features) are of RGB pixels, are not run, said so in the report rather than run on nothing.
RGB_PIXEL_CHECKS = ("near_duplicates.leak", "near_duplicates.within_split", "near_duplicates.unconfirmed",
                    "quality.dark", "quality.bright", "quality.blurry", "quality.low_information",
                    "quality.size_outlier", "quality.aspect_outlier", "background_shortcut", *MODEL_CHECKS)
BAND_SKIP = ("band images (data.bands): measures of 8-bit RGB pixels, which band files do not have; exact duplicates "
             "are found by the band values")


def check_data(prepared: PreparedData, data: DataConfig, *, seed: int, reporter: Reporter | None = None,
               features: Mapping[str, np.ndarray] | None = None, features_skipped: str | None = None
               ) -> DataCheckReport:
    """Run the data checks of ``data.checks`` on ``prepared`` (its splits, the image measures of the image
    check, the files it could not read).

    ``features`` (frozen pretrained features by decoded-pixel hash, from
    :func:`plantpheno.data.doctor.runner.check_features`) enables the label-error and feature-duplicate checks;
    without them those checks are reported as skipped, with ``features_skipped`` as the reason."""
    reporter = default_reporter(reporter)
    settings = data.checks
    regression = prepared.class_names is None
    band_data = bool(prepared.band_stats)
    entries = catalog(prepared.splits, prepared.stats,
                      {p: b.pixel_hash for p, b in prepared.band_stats.items() if b.pixel_hash})
    run = _Run(lambda check: selected(check, settings.ignore))
    for check in RGB_PIXEL_CHECKS if band_data else ():
        run.skip(check, BAND_SKIP if selected(check, settings.ignore) else "in data.checks.ignore")

    run(("unreadable",), lambda: _unreadable(prepared.bad_files, data.on_bad_image))
    run(("duplicate_paths",), lambda: duplicates.duplicate_paths(entries))
    conflicting: set[str] = set()

    def conflicts() -> list[Finding]:
        found, conflicting_contents = duplicates.conflicting_labels(entries, regression=regression)
        conflicting.update(conflicting_contents)
        return found

    run(("conflicting_labels",), conflicts)
    start = time.perf_counter()
    index = duplicates.index_duplicates(entries, max_distance=settings.near_duplicate_distance)
    run.seconds["duplicate_index"] = time.perf_counter() - start
    run(("exact_duplicates.leak", "exact_duplicates.within_split", "near_duplicates.leak",
         "near_duplicates.within_split", "near_duplicates.unconfirmed"),
        lambda: duplicates.duplicate_findings(index, conflicting=conflicting))
    if regression:
        for check in ("labels.case_variants", "labels.missing_from_split", "labels.imbalance", "label_errors"):
            run.skip(check, "classification only")
    else:
        run(("labels.case_variants",), lambda: labels.case_variants(entries))
        run(("labels.missing_from_split",), lambda: labels.missing_from_splits(entries))
        run(("labels.imbalance",), lambda: labels.imbalance(entries))
    if band_data:  # data.bands: per-band statistics, constant bands, train/test shift (RGB: not run)
        run(bands.BAND_CHECKS, lambda: bands.band_findings(prepared.splits, prepared.band_stats, run.selected))
        return DataCheckReport(run.findings, len(entries), run.ran, run.skipped, run.seconds, prepared.fingerprint)
    run(tuple(c for c in CHECKS if c.startswith("quality.")), lambda: quality.quality_findings(entries, run.selected))

    pictures = distinct_files(entries)
    fold_keys = _fold_keys(pictures, index)
    run(("background_shortcut",), lambda: _shortcut(run, pictures, fold_keys, settings, regression, seed))
    _model_checks(run, pictures, fold_keys, features, features_skipped, settings, regression, seed, reporter)
    return DataCheckReport(run.findings, len(entries), run.ran, run.skipped, run.seconds, prepared.fingerprint)


class _Run:
    """Runs checks that are selected, collects findings, and records what ran, what was skipped, and its time."""

    def __init__(self, selected: Callable[[str], bool]) -> None:
        self.selected = selected
        self.findings: list[Finding] = []
        self.ran: list[str] = []
        self.skipped: dict[str, str] = {}
        self.seconds: dict[str, float] = {}

    def __call__(self, checks: tuple[str, ...], fn: Callable[[], list[Finding]]) -> None:
        chosen = [c for c in checks if self.selected(c)]
        for c in checks:
            if c not in chosen:
                self.skip(c, "in data.checks.ignore")
        if not chosen:
            return
        start = time.perf_counter()
        found = fn()
        self.seconds[chosen[0] if len(chosen) == 1 else chosen[0].split(".")[0]] = time.perf_counter() - start
        self.findings += [f for f in found if f.check in chosen]
        self.ran += [c for c in chosen if c not in self.skipped]

    def skip(self, check: str, why: str) -> None:
        self.skipped.setdefault(check, why)


def _unreadable(bad: list, on_bad_image: str) -> list[Finding]:
    if not bad:
        return []
    stop = on_bad_image == "error"
    return [Finding(
        "error" if stop else "info", "unreadable",
        f"{len(bad)} file(s) cannot be used (empty, truncated, not an image, unreadable)" +
        ("." if stop else "; data.on_bad_image=skip leaves them out (listed in the run's bad_images.csv)."),
        len(bad), "repair or remove the files, or set data.on_bad_image=skip to train without them." if stop
        else "nothing, unless the files should be there.",
        files=tuple((str(p),) for p, _ in bad), file_notes=tuple((why,) for _, why in bad))]


def _fold_keys(pictures: list[Entry], index: duplicates.DuplicateIndex) -> list[str]:
    """A fold key per picture: its explicit group, else its duplicate cluster (copies share a fold)."""
    clusters = index.cluster_ids(pictures)
    return [f"group:{e.group}" if e.group is not None else f"pic:{c}" for e, c in zip(pictures, clusters)]


def _shortcut(run: _Run, pictures: list[Entry], fold_keys: list[str], settings, regression: bool,
              seed: int) -> list[Finding]:
    from plantpheno.data.doctor.shortcut import shortcut_finding

    found, why = shortcut_finding(pictures, fold_keys, regression=regression, folds=settings.folds,
                                  permutations=settings.permutations, seed=seed)
    if why:
        run.skip("background_shortcut", why)
    return found


def _model_checks(run: _Run, pictures: list[Entry], fold_keys: list[str], features: Mapping[str, np.ndarray] | None,
                  why_not: str | None, settings, regression: bool, seed: int, reporter: Reporter) -> None:
    wanted = [c for c in MODEL_CHECKS if run.selected(c) and not (regression and c == "label_errors")]
    for c in MODEL_CHECKS:
        if not run.selected(c):
            run.skip(c, "in data.checks.ignore")
    if not wanted:
        return
    rows = [i for i, e in enumerate(pictures) if features is not None and e.content in features]
    if features is None or len(rows) < len(pictures):
        reason = why_not or "no frozen features for these images"
        for c in wanted:
            run.skip(c, reason)
        return
    from plantpheno.data.doctor.label_errors import feature_duplicate_findings, label_error_findings

    matrix = np.stack([np.asarray(features[pictures[i].content], dtype=np.float32) for i in rows])
    if "label_errors" in wanted:
        reporter.info(f"data checks: likely label errors: a {settings.folds}-fold logistic regression on the frozen "
                      f"features of {len(pictures)} images")
        run(("label_errors",), lambda: label_error_findings(pictures, matrix, fold_keys, folds=settings.folds,
                                                            seed=seed)[0])
    if "feature_duplicates" in wanted:
        run(("feature_duplicates",), lambda: feature_duplicate_findings(pictures, matrix, fold_keys))
