"""Calibration metrics against scikit-learn / SciPy, and temperature scaling that recovers a known temperature."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.optimize import minimize_scalar
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, log_loss

from plantpheno.evaluation.calibration import (
    brier,
    calibration_summary,
    fit_temperature,
    nll,
    reliability,
    softmax,
)


def _sample(n=2000, k=5, true_t=2.0, seed=0):
    """Logits and labels drawn from softmax(logits / true_t): the model is over-confident by true_t."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3.0, (n, k))
    probs = softmax(logits, true_t)
    labels = np.array([rng.choice(k, p=p) for p in probs])
    return logits, labels


@pytest.mark.parametrize("bins", [5, 10, 15])
def test_ece_mce_and_reliability_match_sklearn_calibration_curve(bins):
    logits, y = _sample(seed=bins)
    probs = softmax(logits)
    rel = reliability(probs, y, bins=bins)
    conf, correct = probs.max(1), (probs.argmax(1) == y).astype(int)
    frac_pos, mean_pred = calibration_curve(correct, conf, n_bins=bins, strategy="uniform")
    ours_acc = [a for a in rel["accuracy"] if a is not None]
    ours_conf = [c for c in rel["confidence"] if c is not None]
    np.testing.assert_allclose(ours_acc, frac_pos, atol=1e-12)
    np.testing.assert_allclose(ours_conf, mean_pred, atol=1e-12)
    # the same bins, with their counts, as a loop over the definition
    edges = np.linspace(0, 1, bins + 1)
    ece, gaps = 0.0, []
    for lo, hi in itertools.pairwise(edges):
        inside = (conf > lo) & (conf <= hi) if lo > 0 else (conf <= hi)
        if inside.any():
            gap = abs(correct[inside].mean() - conf[inside].mean())
            ece += inside.mean() * gap
            gaps.append(gap)
    assert rel["ece"] == pytest.approx(ece, abs=1e-12)
    assert rel["mce"] == pytest.approx(max(gaps), abs=1e-12)
    assert sum(rel["count"]) == len(y)


def test_brier_and_nll_match_sklearn():
    logits, y = _sample(k=4)
    probs = softmax(logits)
    assert brier(probs, y) == pytest.approx(brier_score_loss(y, probs, labels=range(4)), rel=1e-12)
    assert nll(logits, y) == pytest.approx(log_loss(y, probs, labels=range(4)), rel=1e-9)
    assert nll(logits, y, temperature=2.0) == pytest.approx(log_loss(y, softmax(logits, 2.0), labels=range(4)),
                                                            rel=1e-9)


def test_nll_stays_finite_where_probabilities_underflow():
    logits = np.array([[0.0, 2000.0], [1000.0, 0.0]])
    assert nll(logits, np.array([0, 0])) == pytest.approx(1000.0)


def test_temperature_fit_recovers_the_true_temperature_and_matches_scipy():
    logits, y = _sample(n=4000, true_t=2.5, seed=3)
    fit = fit_temperature(logits, y)
    reference = minimize_scalar(lambda log_t: nll(logits, y, temperature=np.exp(log_t)), bounds=(-4.6, 4.6),
                                method="bounded", options={"xatol": 1e-10})
    assert fit["temperature"] == pytest.approx(np.exp(reference.x), rel=1e-4)
    assert fit["temperature"] == pytest.approx(2.5, rel=0.1)
    assert fit["nll_after"] < fit["nll_before"]
    assert not fit["at_bound"]
    before = calibration_summary(logits, y)
    after = calibration_summary(logits, y, temperature=fit["temperature"])
    assert after["ece"] < before["ece"] / 2
    assert after["accuracy"] == before["accuracy"]  # a temperature never changes the class


def test_a_calibrated_model_keeps_temperature_near_one_and_a_small_ece():
    logits, y = _sample(n=4000, true_t=1.0, seed=5)
    fit = fit_temperature(logits, y)
    assert fit["temperature"] == pytest.approx(1.0, abs=0.1)
    assert calibration_summary(logits, y)["ece"] < 0.03


def test_separable_data_is_flagged_at_the_bound():
    logits = np.array([[5.0, 0.0], [0.0, 5.0]] * 10)
    fit = fit_temperature(logits, np.array([0, 1] * 10))
    assert fit["at_bound"] and fit["temperature"] == pytest.approx(0.01, rel=1e-3)


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="labels must be class indices"):
        nll(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match="NaN or inf"):
        nll(np.array([[np.nan, 0.0]]), np.array([0]))
    with pytest.raises(ValueError, match="bins must be"):
        reliability(np.full((2, 2), 0.5), np.array([0, 1]), bins=0)
