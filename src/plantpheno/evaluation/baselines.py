"""The trivial baselines a model must beat, and a plain verdict on whether it does.

- Classification: always the training split's majority class (what a model that learned nothing but
  the class frequencies scores), and stratified chance (guessing with the training frequencies; its
  expected scores). The verdict compares accuracy with the majority class.
- Traits: always the training split's mean. The verdict compares MAE with it.

The verdict is paired: per image, the model's score minus the baseline's (correct vs. correct, or
absolute error vs. absolute error), with a percentile-bootstrap interval of the mean difference (the
same resampling as the headline metric's interval). ``better`` means the whole interval is on the
good side of zero; ``not clearly better`` means the model's estimate is better but the interval
reaches zero; ``worse`` means it is no better at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from plantpheno.evaluation.metrics import bootstrap_ci, mean_error, regression_metrics

BETTER, UNCLEAR, WORSE = "better", "not clearly better", "worse"


def classification_baseline(train_labels: Sequence[int], eval_labels: Sequence[int],
                            class_names: Sequence[str]) -> dict[str, Any]:
    """Scores of the majority-class and stratified-chance baselines on the evaluated labels."""
    k = len(class_names)
    train = np.bincount(np.asarray(train_labels, dtype=np.int64), minlength=k).astype(np.float64)
    y = np.asarray(eval_labels, dtype=np.int64)
    n, support = len(y), np.bincount(y, minlength=k).astype(np.float64)
    majority = int(train.argmax())
    n_major = support[majority]
    q = train / train.sum()  # stratified guess: class k with its training frequency
    # expected counts under stratified guessing: TP_k = support_k q_k, predicted_k = n q_k
    f1 = np.divide(2 * support * q, support + n * q, out=np.zeros(k), where=(support + n * q) > 0)
    return {
        "kind": "majority class",
        "majority_class": class_names[majority],
        "accuracy": float(n_major / n),
        "macro_f1": float(2 * n_major / (n_major + n) / k),
        "stratified": {"accuracy": float((q * support).sum() / n), "macro_f1": float(f1.mean())},
    }


def regression_baseline(train_values: Sequence[float], eval_values: Sequence[float], *,
                        counts: bool) -> dict[str, Any]:
    """Scores of always predicting the training mean on the evaluated values."""
    mean = float(np.mean(np.asarray(train_values, dtype=np.float64)))
    y = np.asarray(eval_values, dtype=np.float64)
    m = regression_metrics(y, np.full_like(y, mean), counts=counts)
    m.pop("num_samples", None)
    return {"kind": "training mean", "value": mean, **m}


def verdict(*, metric: str, model_scores: np.ndarray, baseline_scores: np.ndarray, higher_is_better: bool,
            model_value: float, baseline_value: float, n_resamples: int, confidence: float,
            seed: int) -> dict[str, Any]:
    """Whether the model beats the baseline, from per-image scores (paired bootstrap of the difference)."""
    sign = 1.0 if higher_is_better else -1.0
    gain = sign * (np.asarray(model_scores, dtype=np.float64) - np.asarray(baseline_scores, dtype=np.float64))
    estimate = float(gain.mean())
    ci = None
    if n_resamples > 0:
        # mean(gain) = mean_error(0, gain): the module's vectorised bootstrap does the resampling
        ci = bootstrap_ci(mean_error, np.zeros_like(gain), gain, n_resamples=n_resamples, confidence=confidence,
                          seed=seed)
    if estimate <= 0:
        word = WORSE
    elif ci is None or ci["low"] > 0:
        word = BETTER
    else:
        word = UNCLEAR
    return {"metric": metric, "model": float(model_value), "baseline": float(baseline_value),
            "improvement": {"estimate": estimate, **({k: ci[k] for k in ("low", "high", "confidence")} if ci else {})},
            "verdict": word, "text": _text(word, metric, model_value, baseline_value, ci)}


def _text(word: str, metric: str, model: float, baseline: float, ci: dict[str, Any] | None) -> str:
    interval = (f"; {ci['confidence']:.0%} interval of the improvement {ci['low']:+.4g} to {ci['high']:+.4g}"
                if ci else "; no bootstrap interval (evaluation.bootstrap_samples: 0)")
    if word == BETTER:
        return f"beats the baseline: {metric} {model:.4g} vs {baseline:.4g}{interval}"
    if word == UNCLEAR:
        return (f"not clearly better than the baseline: {metric} {model:.4g} vs {baseline:.4g}{interval}, which "
                f"includes no improvement")
    return f"does NOT beat the baseline: {metric} {model:.4g} vs {baseline:.4g} for the trivial baseline{interval}"


def classification_verdict(y: np.ndarray, predicted: np.ndarray, baseline: dict[str, Any], class_names: Sequence[str],
                           **bootstrap: Any) -> dict[str, Any]:
    majority = list(class_names).index(baseline["majority_class"])
    model_correct, base_correct = (predicted == y).astype(float), (y == majority).astype(float)
    return verdict(metric="accuracy", model_scores=model_correct, baseline_scores=base_correct, higher_is_better=True,
                   model_value=float(model_correct.mean()), baseline_value=baseline["accuracy"], **bootstrap)


def regression_verdict(y: np.ndarray, predicted: np.ndarray, baseline: dict[str, Any],
                       **bootstrap: Any) -> dict[str, Any]:
    model_err, base_err = np.abs(predicted - y), np.abs(baseline["value"] - y)
    return verdict(metric="mae", model_scores=model_err, baseline_scores=base_err, higher_is_better=False,
                   model_value=float(model_err.mean()), baseline_value=baseline["mae"], **bootstrap)
