"""How a model does on another source than its own: the drop from its in-source test figures (with an interval
of the difference), per-class drops, and calibration on the other source before and after the run's temperature.

The two evaluations are independent samples (other images, other places), so the interval of a difference comes
from resampling each with replacement on its own and taking the percentiles of the resampled differences.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from plantpheno.evaluation.calibration import reliability, softmax
from plantpheno.evaluation.metrics import bootstrap_ci, classification_metrics

_Metric = Callable[[np.ndarray, np.ndarray], float]


def shift_summary(*, source_logits: np.ndarray, source_targets: np.ndarray, test_targets: np.ndarray | None,
                  test_predicted: np.ndarray | None, class_names: Sequence[str], temperature: float,
                  temperature_applied: bool, bins: int, bootstrap_samples: int, confidence: float,
                  seed: int) -> dict[str, Any]:
    """The ``shift`` block of an evaluation on another source (see the module docstring)."""
    k = len(class_names)
    y, pred = source_targets.astype(int), source_logits.argmax(1)
    boot = {"n_resamples": bootstrap_samples, "confidence": confidence, "seed": seed}
    block: dict[str, Any] = {"macro_f1_interval": (bootstrap_ci(_macro_f1(k), y, pred, **boot)
                                                   if bootstrap_samples else None)}
    if test_targets is None or test_predicted is None:
        block["drop"] = None
        block["per_class"] = None
    else:
        t, tp = test_targets.astype(int), test_predicted.astype(int)
        block["drop"] = {name: difference(metric, (t, tp), (y, pred), **boot)
                         for name, metric in (("accuracy", _accuracy), ("macro_f1", _macro_f1(k)))}
        block["per_class"] = [_class_drop(i, name, (t, tp), (y, pred), boot) for i, name in enumerate(class_names)]
    block["calibration"] = _calibration(source_logits, y, temperature, temperature_applied, bins, boot)
    return block


def difference(metric: _Metric, before: tuple[np.ndarray, np.ndarray], after: tuple[np.ndarray, np.ndarray], *,
               n_resamples: int, confidence: float, seed: int) -> dict[str, Any]:
    """``metric(before) - metric(after)`` (the drop) with a percentile-bootstrap interval from resampling each
    sample on its own; no interval when ``n_resamples`` is 0 or a sample is empty."""
    a, b = metric(*before), metric(*after)
    out: dict[str, Any] = {"in_source": a, "source": b, "drop": a - b, "low": None, "high": None,
                           "confidence": confidence, "n_resamples": n_resamples,
                           "method": "percentile bootstrap, each source resampled on its own"}
    if n_resamples < 1 or len(before[0]) == 0 or len(after[0]) == 0:
        return out
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_resamples)
    for r in range(n_resamples):
        i, j = rng.integers(0, len(before[0]), len(before[0])), rng.integers(0, len(after[0]), len(after[0]))
        diffs[r] = metric(before[0][i], before[1][i]) - metric(after[0][j], after[1][j])
    tail = 100.0 * (1.0 - confidence) / 2.0
    out["low"], out["high"] = (float(v) for v in np.percentile(diffs, [tail, 100.0 - tail]))
    return out


def _accuracy(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean(y == p)) if len(y) else float("nan")


def _macro_f1(k: int) -> _Metric:
    def macro_f1(y: np.ndarray, p: np.ndarray) -> float:
        return float(classification_metrics(y, p, num_classes=k)["macro_f1"])

    return macro_f1


def _class_drop(i: int, name: str, test: tuple[np.ndarray, np.ndarray], source: tuple[np.ndarray, np.ndarray],
                boot: dict[str, Any]) -> dict[str, Any]:
    """Recall of class ``i`` in source vs on the other source (a class the other source lacks: no figure)."""
    t_in, s_in = test[0] == i, source[0] == i
    row = {"class": name, "test_images": int(t_in.sum()), "source_images": int(s_in.sum())}
    if not t_in.any() or not s_in.any():
        return {**row, "in_source": None, "source": None, "drop": None, "low": None, "high": None}
    found = difference(_accuracy, (test[0][t_in], test[1][t_in]), (source[0][s_in], source[1][s_in]), **boot)
    return {**row, **{key: found[key] for key in ("in_source", "source", "drop", "low", "high")}}


def _calibration(logits: np.ndarray, y: np.ndarray, temperature: float, applied: bool, bins: int,
                 boot: dict[str, Any]) -> dict[str, Any]:
    """ECE on the other source with the raw softmax and with the run's temperature (fitted on the in-source
    validation split), each with its interval, and the interval of the change."""
    def ece_at(t: float) -> Callable[[np.ndarray, np.ndarray], float]:
        return lambda labels, z: reliability(softmax(z, t), labels, bins=bins)["ece"]

    def change(labels: np.ndarray, z: np.ndarray) -> float:
        return ece_at(temperature)(labels, z) - ece_at(1.0)(labels, z)

    def with_ci(metric: Callable[[np.ndarray, np.ndarray], float]) -> dict[str, Any]:
        if boot["n_resamples"] < 1:
            return {"estimate": metric(y, logits), "low": None, "high": None}
        return bootstrap_ci(metric, y, logits, **boot)

    return {"bins": bins, "temperature": temperature, "temperature_applied": applied,
            "ece_before": with_ci(ece_at(1.0)), "ece_after": with_ci(ece_at(temperature)) if applied else None,
            "ece_change": with_ci(change) if applied else None,
            "mean_confidence": float(softmax(logits, temperature).max(1).mean())}


def worst_errors(paths: Sequence[str], logits: np.ndarray, y: np.ndarray, class_names: Sequence[str], *,
                 temperature: float, limit: int) -> list[dict[str, Any]]:
    """The most confident wrong predictions on the other source, most confident first."""
    probs = softmax(logits, temperature)
    pred = probs.argmax(1)
    wrong = np.flatnonzero(pred != y)
    order = wrong[np.argsort(-probs[wrong, pred[wrong]], kind="stable")][:limit]
    return [{"path": str(paths[i]), "label": class_names[y[i]], "predicted": class_names[pred[i]],
             "confidence": float(probs[i, pred[i]])} for i in order]
