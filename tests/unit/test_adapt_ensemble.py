"""benchmarks/adapt_ensemble.py (10 labelled field images a class, the ensemble of the cross-validation fold
models): the mean of temperature-scaled probabilities, and the figures computed from it."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import load_benchmark


def _module():
    return load_benchmark("adapt_ensemble")


def test_the_ensemble_is_the_mean_of_the_models_probabilities_not_a_vote():
    ens = _module()
    # two of three models say class 0 narrowly, one says class 1 firmly: a majority vote says 0, the mean says 1
    a = np.array([[0.55, 0.45], [0.9, 0.1]])
    b = np.array([[0.55, 0.45], [0.8, 0.2]])
    c = np.array([[0.05, 0.95], [0.7, 0.3]])
    mean = ens.mean_probabilities([a, b, c])
    np.testing.assert_allclose(mean, [[0.55 * 2 / 3 + 0.05 / 3, 0.45 * 2 / 3 + 0.95 / 3], [0.8, 0.2]])
    assert mean.argmax(axis=1).tolist() == [1, 0]
    np.testing.assert_allclose(mean.sum(axis=1), 1.0)
    np.testing.assert_allclose(ens.mean_probabilities([a]), a)  # one model: itself


@pytest.mark.parametrize("bad", [
    [],  # no model
    [np.ones((2, 2)) / 2, np.ones((3, 2)) / 2],  # different image counts
    [np.array([[0.7, 0.7], [0.5, 0.5]])],  # rows not summing to 1 (logits or unscaled scores)
    [np.array([0.5, 0.5])],  # not (images, classes)
])
def test_mean_probabilities_refuses_what_is_not_a_set_of_probability_arrays(bad):
    with pytest.raises(ValueError):
        _module().mean_probabilities(bad)


def test_figures_give_accuracy_and_ece_with_intervals_that_hold_them():
    ens = _module()
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]] * 10)
    labels = np.array([0, 1, 1, 1] * 10)
    out = ens.figures(probs, labels)
    assert out["accuracy"] == pytest.approx(0.75) and out["images"] == 40
    assert out["low"] <= out["accuracy"] <= out["high"] and out["low"] < out["high"]
    # ECE by hand (10 bins): confidences 0.9 (all right), 0.8 (all right), 0.6 (all wrong), 0.7 (all right)
    expected = (abs(1 - 0.9) + abs(1 - 0.8) + abs(0 - 0.6) + abs(1 - 0.7)) / 4
    assert out["ece"]["estimate"] == pytest.approx(expected)
    assert out["ece"]["low"] <= out["ece"]["estimate"] <= out["ece"]["high"]
