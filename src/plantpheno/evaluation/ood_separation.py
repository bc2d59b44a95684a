"""How far a run's OOD score tells two sets of images apart (the in-source test split and another source): AUROC and
FPR at 95 % TPR (:mod:`plantpheno.evaluation.ood`), each with a percentile-bootstrap interval.

The two sets are resampled together (images drawn with replacement from the pooled set, each keeping its side), as
:func:`plantpheno.evaluation.metrics.bootstrap_ci` resamples a split: the interval then covers the noise of both sets'
sizes. A resample that draws no image of one side has no figure and makes the interval unknown (None)."""

from __future__ import annotations

from typing import Any

import numpy as np

from plantpheno.evaluation.metrics import bootstrap_ci
from plantpheno.evaluation.ood import auroc, fpr_at_tpr


def _auroc(side: np.ndarray, scores: np.ndarray) -> float:
    inside, other = scores[side == 0], scores[side == 1]
    return auroc(inside, other) if len(inside) and len(other) else float("nan")


def _fpr95(side: np.ndarray, scores: np.ndarray) -> float:
    inside, other = scores[side == 0], scores[side == 1]
    return fpr_at_tpr(inside, other, 0.95) if len(inside) and len(other) else float("nan")


def separation(in_scores: np.ndarray, other_scores: np.ndarray, *, n_resamples: int, confidence: float,
               seed: int) -> dict[str, Any]:
    """``{"num_in_source", "num_other", "auroc": interval, "fpr95": interval}``; an interval is
    ``{"metric", "estimate", "low", "high", "confidence", "n_resamples", "method"}`` (``low``/``high`` None
    without resamples or where a resample had no image of one side)."""
    if not len(in_scores) or not len(other_scores):
        raise ValueError("the separation needs at least one image on each side")
    side = np.r_[np.zeros(len(in_scores)), np.ones(len(other_scores))].astype(np.int64)
    scores = np.r_[np.asarray(in_scores, dtype=np.float64), np.asarray(other_scores, dtype=np.float64)]
    found: dict[str, Any] = {"num_in_source": len(in_scores), "num_other": len(other_scores)}
    for name, fn in (("auroc", _auroc), ("fpr95", _fpr95)):
        if n_resamples > 0:
            boot = bootstrap_ci(fn, side, scores, n_resamples=n_resamples, confidence=confidence, seed=seed)
            low, high = ((boot["low"], boot["high"]) if np.isfinite(boot["low"]) and np.isfinite(boot["high"])
                         else (None, None))
            found[name] = {"metric": name, "estimate": boot["estimate"], "low": low, "high": high,
                           "confidence": confidence, "n_resamples": n_resamples, "method": boot["method"]}
        else:
            found[name] = {"metric": name, "estimate": fn(side, scores), "confidence": confidence}
    return found
