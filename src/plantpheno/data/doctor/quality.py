"""Image quality: very dark, very bright, blurry and near-blank images, and size or aspect-ratio outliers.

Dark, bright, blurry and nearly uniform are absolute measures with conservative thresholds; when more than a quarter
of the data set falls below one, that is how the data set looks (a lab set shot on one plain background, soft
focus everywhere), and one note says so instead of a warning per image. Sizes and aspect ratios are judged
against the data set itself: beyond 3 x IQR of the log from the quartiles, and at least 2x (area) or 1.5x
(aspect) from the median. Checked on the PlantVillage subset (2,250 lab photos on plain backgrounds) and on
photos of small plants on white and on black: no image is flagged (docs/guide/data-checks.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from plantpheno.data.doctor.catalog import Entry
from plantpheno.data.doctor.findings import Finding

FENCE = 3.0  # x IQR beyond the quartiles (sizes and aspect ratios)
MIN_FOR_FENCES = 20  # fewer images: no size or aspect outliers
DATA_SET_SHARE = 0.25  # more than this share below a threshold: a property of the data set, one note


@dataclass(frozen=True)
class Measure:
    check: str
    field: str
    side: str  # "low" or "high": which side is bad
    threshold: float
    what: str
    fix: str


# Thresholds measured on the PlantVillage subset, 10 synthetic disease seeds, synthetic rosettes and seedlings
# drawn on white paper and black cloth (0.25 % to 10 % of the photo is plant), against 300 subset photos degraded
# on purpose. Dark: luma p99.9 at most 0.149 after darkening to 15 %; elsewhere at least 0.40 (seedlings on black
# 0.66). Bright: luma p0.1 at least 0.847 after blending 85 % white; elsewhere at most 0.44 (seedlings on white
# 0.74). Blurry: sharpness median 0.09 after a Gaussian blur of sigma 3 px; the originals at least 0.128, the
# synthetic leaves 0.146, the seedlings 0.206. Uniform: 100 % for a flat colour with sensor noise up to sigma 6;
# the smallest seedling 99.77 %, the subset at most 90.9 %. docs/guide/data-checks.md.
MEASURES = (
    Measure("quality.dark", "dark", "low", 0.20,
            "very dark (the brightest 0.1 % of pixels reach only {v:.0%} brightness)",
            "check the exposure or remove the images; a model cannot see lesions in the dark."),
    Measure("quality.bright", "bright", "high", 0.80,
            "very bright or washed out (the darkest 0.1 % of pixels are still at {v:.0%} brightness)",
            "check the exposure or remove the images."),
    Measure("quality.blurry", "sharpness", "low", 0.10, "blurry (edge sharpness {v:.3f})",
            "re-take or remove them; if blur is expected in use, keep them and say so."),
    Measure("quality.low_information", "uniform", "high", 0.999,
            "nearly uniform ({v:.2%} of pixels within 32 levels of the median colour)",
            "look at them: an image with nothing but one colour (an empty frame, a covered lens) teaches the "
            "model nothing; remove such images or label them as their own class."),  # not dark/bright
)


def quality_findings(entries: Sequence[Entry], selected: Callable[[str], bool]) -> list[Finding]:
    """The quality findings of the distinct pictures in ``entries`` (those with measures)."""
    pictures = list({e.content: e for e in entries if e.stats is not None}.values())
    findings: list[Finding] = []
    if not pictures:
        return findings
    exposure: set[str] = set()  # dark or bright images are also uniform: reported once, for their exposure
    for m in MEASURES:
        if not selected(m.check):
            continue
        candidates = [e for e in pictures if e.content not in exposure] if m.field == "uniform" else pictures
        found = _threshold_check(candidates, m)
        if m.field in ("dark", "bright"):
            exposure.update(e.content for f in found for e in candidates if (str(e.path),) in f.files)
        findings += found
    if selected("quality.size_outlier"):
        findings += _outliers(pictures, "quality.size_outlier", lambda e: e.stats.width * e.stats.height, 2.0,
                              "far larger or smaller than the rest", "{w} x {h} px",
                              "check they belong to this data set (another camera, a thumbnail, a stitched "
                              "panorama); resize or remove them.")
    if selected("quality.aspect_outlier"):
        findings += _outliers(pictures, "quality.aspect_outlier", lambda e: e.stats.width / e.stats.height, 1.5,
                              "far wider or taller than the rest", "{w} x {h} px",
                              "check them: the centre crop keeps only the middle square, which may miss the "
                              "plant; crop them by hand or remove them.")
    return findings


def _fence(values: np.ndarray, side: str) -> float:
    q1, q3 = np.percentile(values, [25, 75])
    return float(q1 - FENCE * (q3 - q1)) if side == "low" else float(q3 + FENCE * (q3 - q1))


def _threshold_check(pictures: list[Entry], m: Measure) -> list[Finding]:
    raw = np.array([getattr(e.stats, m.field) for e in pictures], dtype=np.float64)
    measured = raw >= 0  # a negative value: nothing to measure (sharpness of a flat image)
    bad = measured & ((raw < m.threshold) if m.side == "low" else (raw > m.threshold))
    count = int(bad.sum())
    if not count:
        return []
    what = m.what.split(" (")[0]
    details = {"threshold": m.threshold, "measure": m.field, "median": float(np.median(raw[measured]))}
    if count > DATA_SET_SHARE * len(pictures):
        return [Finding(
            "info", m.check,
            f"{count} of {len(pictures)} images are {what} by the absolute threshold ({m.field} "
            f"{'<' if m.side == 'low' else '>'} {m.threshold:g}; median {details['median']:.3g}): that is how this "
            f"data set looks, so no image is flagged on its own.", count,
            "nothing, if the whole data set is meant to look like this; the model will only know such images.",
            details=details)]
    flagged = np.flatnonzero(bad)
    order = flagged[np.argsort(raw[flagged] if m.side == "low" else -raw[flagged])]
    return [Finding("warning", m.check, f"{count} image(s) are {what}.", count, m.fix,
                    files=tuple((str(pictures[i].path),) for i in order),
                    file_notes=tuple((m.what.format(v=raw[i]),) for i in order), details=details)]


def _outliers(pictures: list[Entry], check: str, value: Callable[[Entry], float], min_factor: float, what: str,
              note: str, fix: str) -> list[Finding]:
    """Pictures beyond 3 x IQR of log(value) on either side, and at least ``min_factor`` from the median."""
    if len(pictures) < MIN_FOR_FENCES:
        return []
    logs = np.log(np.array([value(e) for e in pictures], dtype=np.float64))
    median = float(np.median(logs))
    far = np.abs(logs - median) >= math.log(min_factor)
    out = far & ((logs < _fence(logs, "low")) | (logs > _fence(logs, "high")))
    flagged = np.flatnonzero(out)
    if not len(flagged):
        return []
    order = flagged[np.argsort(-np.abs(logs[flagged] - median))]
    typical = pictures[int(np.argmin(np.abs(logs - median)))].stats
    return [Finding(
        "warning", check, f"{len(order)} image(s) are {what} (typical: {typical.width} x {typical.height} px).",
        len(order), fix, files=tuple((str(pictures[i].path),) for i in order),
        file_notes=tuple((note.format(w=pictures[i].stats.width, h=pictures[i].stats.height),) for i in order))]
