"""Evaluation metrics for classification and regression, percentile bootstrap CIs, report text.

numpy only. Every returned dict holds plain Python ``float``/``int``/``list`` values so it can be
passed to ``json.dumps`` as is. Invalid arguments (shapes, labels out of range, non-finite
values, bad bootstrap options) raise ``ValueError``: they are programmer errors, not user input.

Conventions follow scikit-learn so numbers can be compared with published results:
``precision_recall_fscore_support(labels=range(num_classes), zero_division=0)`` for the
classification scores and ``r2_score`` (``force_finite=True``) for R².
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

# Bootstrap indices are drawn in blocks of about this many elements (16 MiB as int64).
_BLOCK_ELEMENTS = 1 << 21


# --------------------------------------------------------------------------- input checks


def _as_labels(values: np.ndarray, name: str) -> np.ndarray:
    if values.dtype.kind in "iub":
        return values.astype(np.int64)
    if values.dtype.kind == "f" and np.all(np.isfinite(values)) and np.all(values == np.round(values)):
        return values.astype(np.int64)
    raise ValueError(f"{name} must hold integer class indices, got dtype {values.dtype}")


def _as_pair(y_true: Any, y_pred: Any, *, labels: bool) -> tuple[np.ndarray, np.ndarray]:
    """Check that y_true and y_pred are equal-length, non-empty 1-D arrays; convert them."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    for name, a in (("y_true", t), ("y_pred", p)):
        if a.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.shape[0]} vs {p.shape[0]}")
    if t.size == 0:
        raise ValueError("y_true and y_pred are empty; need at least one sample")
    if labels:
        return _as_labels(t, "y_true"), _as_labels(p, "y_pred")
    t, p = t.astype(np.float64), p.astype(np.float64)
    for name, a in (("y_true", t), ("y_pred", p)):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return t, p


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator elementwise, 0.0 where the denominator is 0 (zero_division=0)."""
    out = np.zeros(np.shape(numerator), dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def _round_half_away(values: np.ndarray) -> np.ndarray:
    # Nearest integer with halves away from zero (MATLAB round, as in the CVPPP evaluation code);
    # np.round would send 2.5 to 2 (banker's rounding).
    return np.sign(values) * np.floor(np.abs(values) + 0.5)


# --------------------------------------------------------------------------- classification


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, *, num_classes: int) -> np.ndarray:
    """Return the ``(num_classes, num_classes)`` int64 count matrix, rows = true, columns = predicted."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    t, p = _as_pair(y_true, y_pred, labels=True)
    for name, a in (("y_true", t), ("y_pred", p)):
        bad = a[(a < 0) | (a >= num_classes)]
        if bad.size:
            raise ValueError(f"{name} holds class index {int(bad[0])}, outside [0, {num_classes})")
    k = int(num_classes)
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k)


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, *, num_classes: int) -> dict:
    """Accuracy, macro/weighted precision, recall, F1, per-class scores and the confusion matrix.

    ``y_true``/``y_pred`` are int arrays of class indices in ``[0, num_classes)``. A score whose
    denominator is 0 counts as 0.0; macro averages run over all ``num_classes`` classes (also
    those absent from ``y_true`` and never predicted), weighted averages weight by support. This
    matches ``sklearn.metrics.precision_recall_fscore_support(labels=range(num_classes),
    zero_division=0)``. Returns ``{"accuracy", "macro_precision", "macro_recall", "macro_f1",
    "weighted_precision", "weighted_recall", "weighted_f1", "per_class": {"precision", "recall",
    "f1", "support"}, "confusion_matrix", "num_samples"}``.
    """
    cm = confusion_matrix(y_true, y_pred, num_classes=num_classes)
    tp = np.diag(cm).astype(np.float64)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    n = int(support.sum())
    scores = {
        "precision": _safe_divide(tp, predicted),
        "recall": _safe_divide(tp, support),
        "f1": _safe_divide(2.0 * tp, support + predicted),
    }
    result: dict[str, Any] = {"accuracy": float(tp.sum() / n)}
    for name, values in scores.items():
        result[f"macro_{name}"] = float(values.mean())
    for name, values in scores.items():
        result[f"weighted_{name}"] = float(np.average(values, weights=support))
    result["per_class"] = {name: values.tolist() for name, values in scores.items()}
    result["per_class"]["support"] = support.tolist()
    result["confusion_matrix"] = cm.tolist()
    result["num_samples"] = n
    return result


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of samples whose predicted class index equals the true one."""
    t, p = _as_pair(y_true, y_pred, labels=True)
    return float(np.mean(t == p))


# --------------------------------------------------------------------------- regression


def mean_absolute_error(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean of ``|pred - true|``."""
    t, p = _as_pair(y_true, y_pred, labels=False)
    return float(np.mean(np.abs(p - t)))


def root_mean_squared_error(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Square root of the mean of ``(pred - true)**2``."""
    t, p = _as_pair(y_true, y_pred, labels=False)
    return float(np.sqrt(np.mean((p - t) ** 2)))


def mean_error(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Bias: mean of ``pred - true`` (positive = over-prediction)."""
    t, p = _as_pair(y_true, y_pred, labels=False)
    return float(np.mean(p - t))


def r2_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Coefficient of determination, as ``sklearn.metrics.r2_score`` (``force_finite=True``).

    With a constant ``y_true`` it is 1.0 for perfect predictions and 0.0 otherwise; with fewer
    than two samples it is NaN (undefined), like scikit-learn.
    """
    t, p = _as_pair(y_true, y_pred, labels=False)
    return float(_r2_rows(t[np.newaxis, :], p[np.newaxis, :])[0])


def _r2_rows(t: np.ndarray, p: np.ndarray) -> np.ndarray:
    """R² of each row of the 2-D arrays ``t`` (true) and ``p`` (predicted)."""
    if t.shape[1] < 2:
        return np.full(t.shape[0], np.nan)
    residual = np.sum((t - p) ** 2, axis=1)
    total = np.sum((t - t.mean(axis=1, keepdims=True)) ** 2, axis=1)
    total[np.ptp(t, axis=1) == 0] = 0.0  # constant rows: no rounding noise in the mean
    r2 = 1.0 - _safe_divide(residual, total)
    constant = total == 0
    r2[constant] = np.where(residual[constant] == 0, 1.0, 0.0)
    return r2


def difference_in_count(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """CVPPP DiC: mean of ``round(pred) - true`` (halves rounded away from zero)."""
    t, p = _as_pair(y_true, y_pred, labels=False)
    return float(np.mean(_round_half_away(p) - t))


def abs_difference_in_count(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """CVPPP |DiC|: mean of ``|round(pred) - true|`` (halves rounded away from zero)."""
    t, p = _as_pair(y_true, y_pred, labels=False)
    return float(np.mean(np.abs(_round_half_away(p) - t)))


def count_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of samples with ``round(pred) == true`` (halves rounded away from zero)."""
    t, p = _as_pair(y_true, y_pred, labels=False)
    return float(np.mean(_round_half_away(p) == t))


def count_within_one(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of samples with ``|round(pred) - true| <= 1``: agreement within one, as leaf-counting papers report
    it beside exact agreement (halves rounded away from zero)."""
    t, p = _as_pair(y_true, y_pred, labels=False)
    return float(np.mean(np.abs(_round_half_away(p) - t) <= 1))


def rounded_counts(y_pred: np.ndarray) -> np.ndarray:
    """Predicted counts as whole numbers, rounded as the count metrics round (halves away from zero)."""
    return _round_half_away(np.asarray(y_pred, dtype=np.float64)).astype(np.int64)


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray, *, counts: bool = False) -> dict:
    """MAE, RMSE, R², bias and sample count; with ``counts=True`` also the CVPPP count metrics.

    Returns ``{"mae", "rmse", "r2", "mean_error", "num_samples"}`` where ``mean_error`` is
    ``mean(pred - true)``. With ``counts=True`` adds ``"dic"`` (mean of ``round(pred) - true``),
    ``"abs_dic"`` (mean of ``|round(pred) - true|``), ``"count_accuracy"`` (fraction with
    ``round(pred) == true``) and ``"count_within_one"`` (fraction with ``|round(pred) - true| <= 1``), rounding
    halves away from zero. See :func:`r2_score` for R² edge cases.
    """
    t, p = _as_pair(y_true, y_pred, labels=False)
    result: dict[str, Any] = {
        "mae": mean_absolute_error(t, p),
        "rmse": root_mean_squared_error(t, p),
        "r2": r2_score(t, p),
        "mean_error": mean_error(t, p),
        "num_samples": int(t.size),
    }
    if counts:
        result["dic"] = difference_in_count(t, p)
        result["abs_dic"] = abs_difference_in_count(t, p)
        result["count_accuracy"] = count_accuracy(t, p)
        result["count_within_one"] = count_within_one(t, p)
    return result


METRIC_FUNCTIONS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": accuracy,
    "mae": mean_absolute_error,
    "rmse": root_mean_squared_error,
    "r2": r2_score,
    "mean_error": mean_error,
    "dic": difference_in_count,
    "abs_dic": abs_difference_in_count,
    "count_accuracy": count_accuracy,
    "count_within_one": count_within_one,
}


# --------------------------------------------------------------------------- bootstrap


def _per_sample_mean(
    per_sample: Callable[[np.ndarray, np.ndarray], np.ndarray], *, labels: bool,
    finish: Callable[[np.ndarray], np.ndarray] = lambda m: m,
) -> Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """Vectorised form of a metric that is ``finish(mean(per_sample(true, pred)))``."""

    def rows(y_true: np.ndarray, y_pred: np.ndarray, index: np.ndarray) -> np.ndarray:
        values = per_sample(*_as_pair(y_true, y_pred, labels=labels)).astype(np.float64)
        return finish(values[index].mean(axis=1))

    return rows


def _r2_resampled(y_true: np.ndarray, y_pred: np.ndarray, index: np.ndarray) -> np.ndarray:
    t, p = _as_pair(y_true, y_pred, labels=False)
    return _r2_rows(t[index], p[index])


# metric -> fn(y_true, y_pred, index of shape (rows, n)) giving the metric of each resample row.
_VECTORISED: dict[Callable[..., float], Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
    accuracy: _per_sample_mean(np.equal, labels=True),
    mean_absolute_error: _per_sample_mean(lambda t, p: np.abs(p - t), labels=False),
    root_mean_squared_error: _per_sample_mean(lambda t, p: (p - t) ** 2, labels=False, finish=np.sqrt),
    mean_error: _per_sample_mean(lambda t, p: p - t, labels=False),
    r2_score: _r2_resampled,
    difference_in_count: _per_sample_mean(lambda t, p: _round_half_away(p) - t, labels=False),
    abs_difference_in_count: _per_sample_mean(lambda t, p: np.abs(_round_half_away(p) - t), labels=False),
    count_accuracy: _per_sample_mean(lambda t, p: _round_half_away(p) == t, labels=False),
    count_within_one: _per_sample_mean(lambda t, p: np.abs(_round_half_away(p) - t) <= 1, labels=False),
}


def _index_blocks(rng: np.random.Generator, n: int, n_resamples: int) -> Iterator[np.ndarray]:
    """Yield ``(rows, n)`` blocks of resample indices, ``n_resamples`` rows in all."""
    rows_per_block = max(1, _BLOCK_ELEMENTS // n)
    for start in range(0, n_resamples, rows_per_block):
        yield rng.integers(0, n, size=(min(rows_per_block, n_resamples - start), n))


def bootstrap_ci(
    metric: Callable[[np.ndarray, np.ndarray], float], y_true: np.ndarray, y_pred: np.ndarray, *,
    n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0,
) -> dict:
    """Percentile-bootstrap confidence interval of ``metric(y_true, y_pred)``.

    Samples are resampled with replacement (the same indices for ``y_true`` and ``y_pred``, along
    the first axis, so ``y_pred`` may also be e.g. an ``(n, classes)`` score array for a custom
    metric). The metric functions of this module (:data:`METRIC_FUNCTIONS`) run vectorised over
    all resamples; any other callable is called once per resample. Results depend only on
    ``seed``, and are the same for a built-in metric and a wrapper of it. Returns ``{"estimate",
    "low", "high", "confidence", "n_resamples", "method": "percentile bootstrap"}``; a
    non-finite resample statistic makes ``low``/``high`` NaN.
    """
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
        raise ValueError(f"n_resamples must be an integer >= 1, got {n_resamples!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence!r}")
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.ndim == 0 or p.ndim == 0 or len(t) != len(p) or len(t) == 0:
        raise ValueError(f"y_true and y_pred need the same non-zero length, got shapes {t.shape} and {p.shape}")
    estimate = float(metric(t, p))
    vectorised = _VECTORISED.get(metric)
    stats: list[np.ndarray] = []
    for index in _index_blocks(np.random.default_rng(seed), len(t), int(n_resamples)):
        if vectorised is not None:
            stats.append(np.asarray(vectorised(t, p, index), dtype=np.float64))
        else:
            stats.append(np.array([float(metric(t[row], p[row])) for row in index]))
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(np.concatenate(stats), [tail, 100.0 - tail])
    return {
        "estimate": estimate,
        "low": float(low),
        "high": float(high),
        "confidence": float(confidence),
        "n_resamples": int(n_resamples),
        "method": "percentile bootstrap",
    }


# --------------------------------------------------------------------------- report text


def format_classification_report(metrics: dict, class_names: Sequence[str], *, digits: int = 4) -> str:
    """Text table like ``sklearn.metrics.classification_report`` from :func:`classification_metrics` output.

    One row per class (precision, recall, f1-score, support), then accuracy, macro avg and
    weighted avg rows. The name column is as wide as the longest class name, so columns stay
    aligned; ``digits`` sets the decimals shown.
    """
    per_class = metrics["per_class"]
    if len(class_names) != len(per_class["support"]):
        raise ValueError(f"got {len(class_names)} class names for {len(per_class['support'])} classes")
    names = [str(name) for name in class_names]
    name_width = max([len("weighted avg"), *(len(name) for name in names)])
    width = max(len("precision"), digits + 3)
    headers = ("precision", "recall", "f1-score", "support")
    lines = [" " * name_width + "".join(f" {h:>{width}}" for h in headers), ""]

    def row(label: str, values: Sequence[float | None], support: int) -> str:
        cells = "".join(f" {'':>{width}}" if v is None else f" {v:>{width}.{digits}f}" for v in values)
        return f"{label:<{name_width}}{cells} {support:>{width}d}"

    for i, name in enumerate(names):
        scores = [per_class[key][i] for key in ("precision", "recall", "f1")]
        lines.append(row(name, scores, int(per_class["support"][i])))
    n = int(metrics["num_samples"])
    lines += ["", row("accuracy", [None, None, metrics["accuracy"]], n)]
    for kind, label in (("macro", "macro avg"), ("weighted", "weighted avg")):
        scores = [metrics[f"{kind}_{key}"] for key in ("precision", "recall", "f1")]
        lines.append(row(label, scores, n))
    return "\n".join(lines) + "\n"
