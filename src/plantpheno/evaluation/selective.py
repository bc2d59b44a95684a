"""Selective prediction: answer only when confident enough, and say what that costs in coverage.

A confidence threshold is chosen on the validation split for a target accuracy
(``evaluation.selective.target_accuracy``): the lowest threshold whose kept validation images reach the target,
which keeps the most images. Its coverage and accuracy on the evaluated split come with Wilson intervals (a
proportion of a few hundred images). The risk-coverage curve (Geifman & El-Yaniv 2017) shows the error among the
kept images as the threshold sweeps from "keep everything" to "keep only the most confident".
"""

from __future__ import annotations


from statistics import NormalDist

import numpy as np


def wilson(successes: int, n: int, confidence: float = 0.95) -> list[float] | None:
    """The Wilson score interval of a proportion, or None for n = 0."""
    if n <= 0:
        return None
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # exact ends for 0 and n successes (centre - half is 0 or 1 up to rounding)
    low = 0.0 if successes == 0 else float(max(0.0, centre - half))
    high = 1.0 if successes == n else float(min(1.0, centre + half))
    return [low, high]


def risk_coverage(confidence: np.ndarray, correct: np.ndarray, *, points: int = 50) -> dict[str, list[float]]:
    """The error rate among the ``m`` most confident images against their coverage ``m / n``, at up to ``points``
    coverages, and the area under the curve (AURC: the mean risk over all coverages; lower is better)."""
    order = np.argsort(-np.asarray(confidence), kind="stable")
    wrong = 1.0 - np.asarray(correct, dtype=float)[order]
    n = len(wrong)
    if n == 0:
        return {"coverage": [], "risk": [], "aurc": float("nan")}
    risk = np.cumsum(wrong) / np.arange(1, n + 1)
    picks = np.unique(np.linspace(0, n - 1, min(points, n)).round().astype(int))
    return {"coverage": [float((i + 1) / n) for i in picks], "risk": [float(risk[i]) for i in picks],
            "aurc": float(risk.mean())}


def choose_threshold(confidence: np.ndarray, correct: np.ndarray, target_accuracy: float) -> float | None:
    """The lowest confidence threshold at which the images kept (confidence >= threshold) reach
    ``target_accuracy``; None when not even the single most confident image does."""
    conf = np.asarray(confidence, dtype=float)
    order = np.argsort(-conf, kind="stable")
    right = np.asarray(correct, dtype=float)[order]
    acc = np.cumsum(right) / np.arange(1, len(right) + 1)
    # a threshold can only fall between distinct confidences: keep the last index of each run of ties
    sorted_conf = conf[order]
    last_of_tie = np.append(sorted_conf[1:] < sorted_conf[:-1], True)
    ok = np.flatnonzero((acc >= target_accuracy) & last_of_tie)
    return float(sorted_conf[ok[-1]]) if len(ok) else None
