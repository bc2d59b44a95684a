"""The data checks of ``data.bands``: per-band statistics per split, bands that are constant in some images, and
bands whose distribution differs between the training and test splits.

They read the per-band measures the image check took (:mod:`plantpheno.data.band_stats`); an RGB config has none
and runs none of these checks (its report is as before).

The shift test compares each band's per-image means in train and test with a two-sample Kolmogorov-Smirnov test
(asymptotic p-value). It fires when the p-value is below ``SHIFT_ALPHA`` divided by the number of bands
(Bonferroni) *and* the KS distance is at least ``SHIFT_MIN_DISTANCE`` (so a large data set does not flag a
shift too small to matter). False positives measured with ``benchmarks/band_doctor.py``: on random splits of
sets with no planted shift it fired in none of 200 splits of the synthetic multispectral set (240 images) and
none of 200 splits of the PlantVillage subset read as red, green, blue bands (2,250 images); see
docs/guide/bands.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from plantpheno.data.band_stats import BandImageStats
from plantpheno.data.doctor.findings import Finding
from plantpheno.data.sources import Sample

BAND_CHECKS = ("bands.statistics", "bands.constant", "bands.shift")
SHIFT_ALPHA = 0.001  # family-wise over the bands
SHIFT_MIN_DISTANCE = 0.25  # the KS distance (largest gap between the two cumulative distributions) worth a word
MIN_SPLIT_IMAGES = 10  # fewer images in train or test: no shift test


def band_findings(splits: Mapping[str, Sequence[Sample]], stats: Mapping[Path, BandImageStats],
                  selected: Callable[[str], bool]) -> list[Finding]:
    """The findings of the band checks that are ``selected`` (nothing without band measures)."""
    rows = [(split, s, stats[s.path]) for split, samples in splits.items() for s in samples if s.path in stats]
    if not rows:
        return []
    found: list[Finding] = []
    if selected("bands.statistics"):
        found.append(statistics_finding(rows))
    if selected("bands.constant"):
        found += constant_findings(rows)
    if selected("bands.shift"):
        found += shift_findings(rows)
    return found


def split_statistics(rows: Sequence[tuple[str, Sample, BandImageStats]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per split, per band: mean and standard deviation over all pixels (pooled from the images'), the median of
    the images' 1st and 99th percentiles, and the mean share of zero and saturated pixels."""
    names = rows[0][2].names
    out: dict[str, dict[str, dict[str, float]]] = {}
    for split in dict.fromkeys(r[0] for r in rows):
        measured = [r[2] for r in rows if r[0] == split]
        per_band = {}
        for i, name in enumerate(names):
            means = np.array([m.mean[i] for m in measured])
            stds = np.array([m.std[i] for m in measured])
            per_band[name] = {"images": len(measured), "mean": float(means.mean()),
                              "std": float(math.sqrt(float((stds**2).mean() + means.var()))),
                              "low": float(np.median([m.low[i] for m in measured])),
                              "high": float(np.median([m.high[i] for m in measured])),
                              "zero": float(np.mean([m.zero[i] for m in measured])),
                              "saturated": float(np.mean([m.saturated[i] for m in measured]))}
        out[split] = per_band
    return out


def statistics_finding(rows: Sequence[tuple[str, Sample, BandImageStats]]) -> Finding:
    table = split_statistics(rows)
    train = table.get("train") or next(iter(table.values()))
    shown = ", ".join(f"{name} {v['mean']:.4g} ± {v['std']:.3g} (p1-p99 {v['low']:.4g}-{v['high']:.4g}, "
                      f"{v['saturated']:.1%} saturated, {v['zero']:.1%} zero)" for name, v in train.items())
    return Finding("info", "bands.statistics", f"per-band statistics of {len(rows)} images, training split: {shown}; "
                   f"every split in data_check.json.", len(rows), "nothing; compare the splits if in doubt.",
                   details={"splits": table})


def constant_findings(rows: Sequence[tuple[str, Sample, BandImageStats]]) -> list[Finding]:
    """Images in which a band holds one value (a dead sensor, a blank or failed export): the model sees nothing
    in that band there."""
    names = rows[0][2].names
    flagged = []
    per_band = dict.fromkeys(names, 0)
    for split, sample, m in rows:
        flat = [(name, m.mean[i]) for i, name in enumerate(names) if m.std[i] == 0]
        if flat:
            flagged.append((split, sample, flat))
            for name, _ in flat:
                per_band[name] += 1
    if not flagged:
        return []
    counts = ", ".join(f"{name} in {n} ({n / len(rows):.0%})" for name, n in per_band.items() if n)
    return [Finding(
        "warning", "bands.constant", f"{len(flagged)} image(s) have a band that holds one value ({counts}): the "
        f"model sees nothing in that band there.", len(flagged),
        "look at the files: re-export or re-capture them, or remove the images (or the band from data.bands).",
        files=tuple((str(s.path),) for _, s, _ in flagged),
        file_notes=tuple((f"{split}, {s.target}, " + ", ".join(f"{n} = {v:g}" for n, v in flat),)
                         for split, s, flat in flagged),
        details={"images": per_band})]


def shift_findings(rows: Sequence[tuple[str, Sample, BandImageStats]]) -> list[Finding]:
    """Bands whose per-image means are distributed differently in the training and test splits."""
    names = rows[0][2].names
    train = [r[2] for r in rows if r[0] == "train"]
    test = [r[2] for r in rows if r[0] == "test"]
    if min(len(train), len(test)) < MIN_SPLIT_IMAGES:
        return []
    alpha = SHIFT_ALPHA / len(names)
    shifted = {}
    for i, name in enumerate(names):
        distance, p = ks_two_sample(np.array([m.mean[i] for m in train]), np.array([m.mean[i] for m in test]))
        if p < alpha and distance >= SHIFT_MIN_DISTANCE:
            shifted[name] = {"ks_distance": distance, "p_value": p,
                             "train_mean": float(np.mean([m.mean[i] for m in train])),
                             "test_mean": float(np.mean([m.mean[i] for m in test]))}
    if not shifted:
        return []
    shown = ", ".join(f"{n} (KS distance {v['ks_distance']:.2f}, p = {v['p_value']:.1e}; mean {v['train_mean']:.4g} "
                      f"in train, {v['test_mean']:.4g} in test)" for n, v in shifted.items())
    return [Finding(
        "warning", "bands.shift", f"the per-image means of {len(shifted)} band(s) differ between the training and "
        f"test splits: {shown}. The test score then measures another data set than the model learnt.",
        len(shifted), "check how the splits were made (dates, sites, sensors, calibration); split at random or by "
        "group within each, or calibrate the band.",
        details={"bands": shifted, "alpha": SHIFT_ALPHA, "min_distance": SHIFT_MIN_DISTANCE})]


def ks_two_sample(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """The two-sample Kolmogorov-Smirnov distance and its asymptotic p-value (Stephens' correction, as in
    Numerical Recipes), without scipy."""
    a, b = np.sort(a), np.sort(b)
    values = np.concatenate([a, b])
    gap = np.abs(np.searchsorted(a, values, side="right") / len(a) - np.searchsorted(b, values, side="right") / len(b))
    distance = float(gap.max())
    n = len(a) * len(b) / (len(a) + len(b))
    lam = (math.sqrt(n) + 0.12 + 0.11 / math.sqrt(n)) * distance
    if lam < 0.2:
        return distance, 1.0
    p = 2 * sum((-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam) for k in range(1, 101))
    return distance, float(min(1.0, max(0.0, p)))
