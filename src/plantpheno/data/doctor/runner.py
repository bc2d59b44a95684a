"""The data checks of a config, as ``plantpheno train`` and ``plantpheno data check`` run them: the memoised report,
the frozen features the model checks use, and what an error-level finding does (:func:`enforce`).

The checks that need a network (likely label errors, feature near-duplicates) get their features from an
``extract`` function their caller passes in (:func:`plantpheno.training.doctor_features.frozen_features`), since
data never imports models. The features are those of the bundled ImageNet EfficientNet-Lite0 at 224 px,
memoised per decoded picture in ``OUTPUT_DIR/.cache/checks/``, so a second check computes nothing.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from plantpheno.check_ids import selected
from plantpheno.data.cache import CACHE_DIR
from plantpheno.data.doctor.check import MODEL_CHECKS, check_data
from plantpheno.data.doctor.findings import DataCheckReport
from plantpheno.errors import ConfigError, DataCheckError
from plantpheno.reporting import Reporter, default_reporter

if TYPE_CHECKING:
    from plantpheno.config import DataChecksConfig, DataConfig
    from plantpheno.data.prepared import PreparedData

# Frozen features of images, one row per path, in order, showing progress to the reporter (computed above the data
# layer, where models are known).
FeatureExtractor = Callable[[Sequence[Path], Reporter], np.ndarray]

FEATURE_BACKBONE = "tf_efficientnet_lite0"
FEATURE_SIZE = 224
FEATURE_MEMO = "checks/features-{backbone}-{size}.npz"  # under OUTPUT_DIR/.cache
# The label-error check is the one check with extra libraries; say which, under which licence, and that the rest
# runs without them (cleanlab was AGPL-3.0 up to 2.7 and is Apache-2.0 from 2.8, the floor plantpheno[doctor] sets).
DOCTOR_HINT = ("pip install 'plantpheno[doctor]': scikit-learn (BSD-3-Clause) and cleanlab (Apache-2.0 from 2.8; "
               "AGPL-3.0 up to 2.7); every other data check runs without them")
REPORT_MEMO = "checks/reports/{key}.json"  # under OUTPUT_DIR/.cache
REPORT_MEMO_VERSION = 3  # bump when a check's logic or wording changes: memoised reports are then redone


def run_data_checks(prepared: PreparedData, data: DataConfig, *, seed: int, output_dir: Path,
                    extract: FeatureExtractor | None, reporter: Reporter | None = None) -> DataCheckReport:
    """Every data check of ``data.checks`` on ``prepared``, with frozen features (from ``extract``, for the
    pictures not memoised yet) where enabled; ``extract=None`` skips the model checks. ``seed`` is the config's
    (the folds of the model checks); the memos live under ``output_dir``.

    The report is memoised under ``OUTPUT_DIR/.cache/checks/reports/``, keyed by everything it depends on (each
    row's file, label, split, group and decoded-pixel hash, the check settings, the seed, whether features were
    used): the checks are deterministic, so a second run on the same data (a tuning trial, a re-run) reads it."""
    reporter = default_reporter(reporter)
    cache_dir = output_dir / CACHE_DIR
    features, why_not = check_features(prepared, data.checks, cache_dir=cache_dir, extract=extract, reporter=reporter)
    memo = cache_dir / REPORT_MEMO.format(key=_report_key(prepared, data, seed, why_not))
    if memo.is_file():
        try:
            return DataCheckReport.read(memo)
        except (OSError, ValueError, KeyError, TypeError):
            pass  # unreadable: check again and rewrite it
    report = check_data(prepared, data, seed=seed, reporter=reporter, features=features, features_skipped=why_not)
    try:
        report.write(memo)
    except OSError:  # a read-only output folder only costs the speed-up
        pass
    return report


def _report_key(prepared: PreparedData, data: DataConfig, seed: int, features_skipped: str | None) -> str:
    import hashlib
    import json

    from plantpheno.data.doctor.pixels import STATS_VERSION
    from plantpheno.version import __version__

    rows = [[split, str(s.path), s.target, s.group,
             prepared.stats[s.path].pixel_hash if s.path in prepared.stats else None]
            for split, samples in prepared.splits.items() for s in samples]
    key = {"rows": rows, "bad": [[str(p), why] for p, why in prepared.bad_files], "task": prepared.task,
           "checks": data.checks.model_dump(mode="json"), "seed": seed,
           "on_bad_image": data.on_bad_image, "features": features_skipped,
           # band data has no decoded-pixel hashes in the rows: its content is in the fingerprint
           **({"fingerprint": prepared.fingerprint} if prepared.band_stats else {}),
           "versions": [__version__, STATS_VERSION, REPORT_MEMO_VERSION]}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:32]


def enforce(report: DataCheckReport, *, on_error: str, where: Path, reporter: Reporter) -> DataCheckReport:
    """Tell the person what the checks found; an error-level finding stops (``DataCheckError``, with the report
    written to ``where``, :func:`plantpheno.run.folder.data_check_path`) unless ``on_error``
    (``data.checks.on_error``) is ``warn``."""
    reporter.info(report.headline())
    if report.errors and on_error == "stop":
        report.write(where)
        lines = []
        for finding in report.errors:
            lines += [finding.line(), *finding.file_lines()]
        raise DataCheckError(
            f"the data checks found {len(report.errors)} error(s); nothing was trained and no run folder was made. "
            f"Fix the data, or set data.checks.on_error=warn to train anyway (the score would not be trustworthy). "
            f"All findings: {where}\n" + "\n".join(lines))
    if report.errors:
        report = report.with_errors_as_warnings()
        reporter.warning(f"data.checks.on_error=warn: {len(report.findings)} finding(s) of the data checks, "
                         f"errors included, are reported as warnings")
    for finding in report.findings:
        if finding.severity != "info":
            reporter.warning(finding.line(severity=False))
    return report


def check_features(prepared: PreparedData, settings: DataChecksConfig, *, cache_dir: Path,
                   extract: FeatureExtractor | None,
                   reporter: Reporter) -> tuple[dict[str, np.ndarray] | None, str | None]:
    """Frozen pretrained features of every picture (by decoded-pixel hash) for the model checks, or None and why
    not: ``data.checks.label_errors`` off, the checks ignored, or ``auto`` and not all features are cached (in the
    memo under ``cache_dir``, ``OUTPUT_DIR/.cache``)."""
    if not any(selected(c, settings.ignore) for c in MODEL_CHECKS):
        return None, "in data.checks.ignore"
    if settings.label_errors == "off":
        return None, "data.checks.label_errors=off"
    wanted = {stats.pixel_hash: path for path, stats in prepared.stats.items()}
    memo_path = cache_dir / FEATURE_MEMO.format(backbone=FEATURE_BACKBONE, size=FEATURE_SIZE)
    memo = read_feature_memo(memo_path)
    missing = [h for h in wanted if h not in memo]
    if missing and settings.label_errors == "auto":
        return None, (f"data.checks.label_errors=auto and {len(missing)} of {len(wanted)} images have no cached "
                      f"frozen features; set data.checks.label_errors=on (or run plantpheno data check "
                      f"--label-errors) to compute them once")
    if not _libraries_present():
        if settings.label_errors == "on":
            raise ConfigError(f"data.checks.label_errors=on: the label-error check needs scikit-learn and "
                              f"cleanlab, which are not installed ({DOCTOR_HINT})")
        return None, f"the label-error check needs scikit-learn and cleanlab, not installed ({DOCTOR_HINT})"
    if missing:
        if extract is None:
            return None, f"{len(missing)} of {len(wanted)} images have no cached features and no network computes them"
        reporter.info(f"data checks: frozen {FEATURE_BACKBONE} features of {len(missing)} image(s) for the label-"
                      f"error and feature-duplicate checks (computed once, cached in {memo_path.parent})")
        hashes = sorted(missing)
        computed = extract([wanted[h] for h in hashes], reporter)
        memo.update(zip(hashes, np.asarray(computed).astype(np.float16)))
        write_feature_memo(memo_path, memo)
    return {h: memo[h] for h in wanted}, None


def _libraries_present() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("sklearn", "cleanlab"))


def read_feature_memo(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return dict(zip(data["hashes"].tolist(), data["features"]))
    except (OSError, ValueError, KeyError):
        return {}  # absent or unreadable: compute (and rewrite it)


def write_feature_memo(path: Path, memo: dict[str, np.ndarray]) -> None:
    from plantpheno.files.atomic import atomic_write_bytes

    buffer = io.BytesIO()
    hashes = sorted(memo)
    np.savez(buffer, hashes=np.array(hashes), features=np.stack([memo[h] for h in hashes]).astype(np.float16))
    try:
        atomic_write_bytes(path, buffer.getvalue())
    except OSError:  # a read-only output folder only costs the speed-up
        pass
