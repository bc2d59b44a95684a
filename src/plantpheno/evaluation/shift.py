"""How a model does on another source than its own: the drop from its in-source test figures (with an interval
of the difference), per-class drops, and calibration on the other source before and after the run's temperature.

The two evaluations are independent samples (other images, other places), so the interval of a difference comes
from resampling each with replacement on its own and taking the percentiles of the resampled differences.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from plantpheno.evaluation.calibration import fit_temperature, reliability, softmax
from plantpheno.evaluation.metrics import bootstrap_ci, classification_metrics

_Metric = Callable[[np.ndarray, np.ndarray], float]


@dataclass(frozen=True)
class CalibrationSet:
    """Labelled images of the other source set aside to fit its temperature on: their raw logits, their class
    indices and where they came from (the evaluated images are never among them)."""

    logits: np.ndarray
    targets: np.ndarray
    origin: str


def shift_summary(*, source_logits: np.ndarray, source_targets: np.ndarray, test_targets: np.ndarray | None,
                  test_predicted: np.ndarray | None, class_names: Sequence[str], temperature: float,
                  temperature_applied: bool, bins: int, bootstrap_samples: int, confidence: float,
                  seed: int, calibration_set: CalibrationSet | None = None) -> dict[str, Any]:
    """The ``shift`` block of an evaluation on another source (see the module docstring). ``calibration_set``:
    other labelled images of the same source (never the evaluated ones) to fit a temperature of that source on."""
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
    if calibration_set is not None:
        block["calibration"]["source_temperature"] = source_temperature(source_logits, y, calibration_set,
                                                                        bins=bins, boot=boot)
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


def source_temperature(logits: np.ndarray, y: np.ndarray, calibration: CalibrationSet, *, bins: int,
                       boot: dict[str, Any]) -> dict[str, Any]:
    """A temperature fitted on the other source's own labelled calibration images (minimum NLL, as on the run's
    validation split), and the ECE of the evaluated images with it (interval; and the interval of the change from
    the raw softmax). A perfectly separated calibration set has no finite fit (its NLL keeps falling as T -> 0):
    then nothing is applied and ``not_applied`` says why."""
    fit = fit_temperature(calibration.logits, calibration.targets)
    applied = not fit["at_bound"]
    out: dict[str, Any] = {"fitted_on": calibration.origin, "num_images": fit["num_images"],
                           "temperature": fit["temperature"] if applied else 1.0,
                           "fitted_temperature": fit["temperature"], "applied": applied,
                           "nll_before": fit["nll_before"], "nll_after": fit["nll_after"],
                           "calibration_accuracy": float(np.mean(calibration.logits.argmax(1) == calibration.targets)),
                           "ece_after": None, "ece_change": None}
    if not applied:
        out["not_applied"] = (f"the {fit['num_images']} calibration images are perfectly separated: their NLL keeps "
                              f"falling as T -> 0, so no temperature can be fitted on them")
        return out
    out["ece_after"], out["ece_change"] = _refitted_ece(logits, y, calibration, fit["temperature"], bins, boot)
    return out


def _refitted_ece(logits: np.ndarray, y: np.ndarray, calibration: CalibrationSet, temperature: float, bins: int,
                  boot: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """ECE of the evaluated images at ``temperature`` and its change from the raw softmax, with percentile-bootstrap
    intervals that resample the evaluated and the calibration images each on their own and refit the temperature
    on every calibration resample (a few dozen calibration images make the temperature itself uncertain); a
    resample whose calibration images are separated gets T = 1, as the fit itself would."""
    def ece(labels: np.ndarray, z: np.ndarray, t: float) -> float:
        return float(reliability(softmax(z, t), labels, bins=bins)["ece"])

    after, before = ece(y, logits, temperature), ece(y, logits, 1.0)
    est = ({"estimate": after, "low": None, "high": None}, {"estimate": after - before, "low": None, "high": None})
    if boot["n_resamples"] < 1 or len(y) == 0:
        return est
    rng = np.random.default_rng(boot["seed"])
    stats = np.empty((boot["n_resamples"], 2))
    m = len(calibration.targets)
    for r in range(boot["n_resamples"]):
        j, i = rng.integers(0, m, m), rng.integers(0, len(y), len(y))
        fit = fit_temperature(calibration.logits[j], calibration.targets[j])
        t = 1.0 if fit["at_bound"] else fit["temperature"]
        stats[r, 0] = ece(y[i], logits[i], t)
        stats[r, 1] = stats[r, 0] - ece(y[i], logits[i], 1.0)
    tail = 100.0 * (1.0 - boot["confidence"]) / 2.0
    method = ("percentile bootstrap, the evaluated and the calibration images resampled each on their own, the "
              "temperature refitted on each calibration resample")
    for col, block in enumerate(est):
        low, high = np.percentile(stats[:, col], [tail, 100.0 - tail])
        block.update(low=float(low), high=float(high), confidence=boot["confidence"],
                     n_resamples=boot["n_resamples"], method=method)
    return est


def worst_errors(paths: Sequence[str], logits: np.ndarray, y: np.ndarray, class_names: Sequence[str], *,
                 temperature: float, limit: int) -> list[dict[str, Any]]:
    """The most confident wrong predictions on the other source, most confident first."""
    probs = softmax(logits, temperature)
    pred = probs.argmax(1)
    wrong = np.flatnonzero(pred != y)
    order = wrong[np.argsort(-probs[wrong, pred[wrong]], kind="stable")][:limit]
    return [{"path": str(paths[i]), "label": class_names[y[i]], "predicted": class_names[pred[i]],
             "confidence": float(probs[i, pred[i]])} for i in order]
