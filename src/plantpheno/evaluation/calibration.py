"""Are the predicted probabilities honest? ECE, MCE, Brier score, NLL, reliability data, temperature scaling.

numpy only; plain Python numbers out (JSON-ready). Conventions:

- ECE/MCE are *top-label* calibration errors with ``bins`` equal-width confidence bins over [0, 1]
  (15 by default, as in Guo et al. 2017, "On Calibration of Modern Neural Networks"). A confidence on
  an inner edge belongs to the lower bin, as in ``sklearn.calibration.calibration_curve(strategy="uniform")``;
  ECE = sum over bins of (bin share of the images) x |accuracy - mean confidence|, MCE = the largest
  such gap over non-empty bins.
- Brier score: mean over images of the sum over classes of (p - one-hot)^2 (0 = perfect, 2 = worst),
  as ``sklearn.metrics.brier_score_loss`` for several classes.
- NLL: mean of -log p(true class), computed from logits (log-softmax), so it stays finite where a
  float32 probability would round to 0.
- Temperature scaling (Guo et al. 2017): one scalar T > 0 divides every logit; it is fitted on the
  validation split by minimising the NLL and never changes a prediction's class, only its confidence.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

DEFAULT_BINS = 15
_T_RANGE = (1e-2, 1e2)  # temperatures searched (a fit at an end says so in ``at_bound``)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return np.exp(log_softmax(np.asarray(logits, dtype=np.float64) / temperature))


def _check(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z, y = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    if z.ndim != 2 or y.ndim != 1 or len(z) != len(y) or len(y) == 0:
        raise ValueError(f"need logits (N, C) and labels (N,) with N >= 1, got shapes {z.shape} and {y.shape}")
    if not np.all(np.isfinite(z)):
        raise ValueError("logits contain NaN or inf")
    y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= z.shape[1]:
        raise ValueError(f"labels must be class indices in [0, {z.shape[1]}), got {int(y.min())}..{int(y.max())}")
    return z, y


def nll(logits: np.ndarray, labels: np.ndarray, *, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true class under softmax(logits / temperature)."""
    z, y = _check(logits, labels)
    return float(-log_softmax(z / temperature)[np.arange(len(y)), y].mean())


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Multi-class Brier score: mean over images of sum over classes of (p - one-hot)^2."""
    p, y = np.asarray(probs, dtype=np.float64), np.asarray(labels).astype(np.int64)
    onehot = np.zeros_like(p)
    onehot[np.arange(len(y)), y] = 1.0
    return float(((p - onehot) ** 2).sum(axis=1).mean())


def reliability(probs: np.ndarray, labels: np.ndarray, *, bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """Top-label reliability data and the calibration errors derived from it.

    Returns ``{"bins", "edges", "count", "confidence", "accuracy", "ece", "mce"}``; ``confidence`` and
    ``accuracy`` are per-bin means (``None`` for an empty bin)."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    p, y = np.asarray(probs, dtype=np.float64), np.asarray(labels).astype(np.int64)
    conf, correct = p.max(axis=1), (p.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.searchsorted(edges[1:-1], conf, side="left")  # (a, b]: an inner edge goes to the lower bin
    count = np.bincount(index, minlength=bins)
    conf_sum = np.bincount(index, weights=conf, minlength=bins)
    acc_sum = np.bincount(index, weights=correct, minlength=bins)
    filled = count > 0
    mean_conf = np.divide(conf_sum, count, out=np.zeros(bins), where=filled)
    mean_acc = np.divide(acc_sum, count, out=np.zeros(bins), where=filled)
    gap = np.abs(mean_acc - mean_conf)
    return {
        "bins": int(bins), "edges": edges.tolist(), "count": count.astype(int).tolist(),
        "confidence": [float(c) if f else None for c, f in zip(mean_conf, filled)],
        "accuracy": [float(a) if f else None for a, f in zip(mean_acc, filled)],
        "ece": float((count / count.sum() * gap).sum()),
        "mce": float(gap[filled].max()),
    }


def calibration_summary(logits: np.ndarray, labels: np.ndarray, *, temperature: float = 1.0,
                        bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """ECE, MCE, Brier, NLL, accuracy, mean confidence and the reliability data of softmax(logits / T)."""
    z, y = _check(logits, labels)
    probs = softmax(z, temperature)
    rel = reliability(probs, y, bins=bins)
    return {"temperature": float(temperature), "ece": rel["ece"], "mce": rel["mce"], "brier": brier(probs, y),
            "nll": nll(z, y, temperature=temperature), "accuracy": float((probs.argmax(1) == y).mean()),
            "mean_confidence": float(probs.max(1).mean()), "reliability": rel}


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """The temperature T that minimises the NLL of softmax(logits / T) on (validation) logits and labels.

    The NLL is convex in 1/T, so a golden-section search over log T in [0.01, 100] finds its minimum
    (to about 1e-9 in log T). Returns ``{"temperature", "nll_before", "nll_after", "num_images",
    "at_bound"}``; ``at_bound`` is true when the best T is an end of the range (e.g. a perfectly separated
    validation split, whose NLL keeps falling as T -> 0)."""
    z, y = _check(logits, labels)
    lo, hi = math.log(_T_RANGE[0]), math.log(_T_RANGE[1])

    def loss(log_t: float) -> float:
        return nll(z, y, temperature=math.exp(log_t))

    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = lo, hi
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = loss(c), loss(d)
    while b - a > 1e-9:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = loss(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = loss(d)
    best = (a + b) / 2.0
    # never worse than leaving the logits alone (flat or noisy losses)
    if loss(best) > loss(0.0):
        best = 0.0
    t = math.exp(best)
    return {"temperature": t, "nll_before": loss(0.0), "nll_after": loss(best), "num_images": len(y),
            "at_bound": bool(best - lo < 1e-6 or hi - best < 1e-6)}
