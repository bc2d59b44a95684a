"""Trivial baselines against scikit-learn's dummy estimators, and the paired verdict."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error, r2_score

from plantpheno.evaluation import baselines

NAMES = ["a", "b", "c"]


def test_majority_class_matches_sklearn_most_frequent():
    rng = np.random.default_rng(0)
    train = rng.choice(3, 300, p=[0.2, 0.5, 0.3])
    test = rng.choice(3, 200, p=[0.3, 0.4, 0.3])
    base = baselines.classification_baseline(train, test, NAMES)
    dummy = DummyClassifier(strategy="most_frequent").fit(np.zeros((300, 1)), train)
    guess = dummy.predict(np.zeros((200, 1)))
    assert base["majority_class"] == "b"
    assert base["accuracy"] == pytest.approx(accuracy_score(test, guess))
    assert base["macro_f1"] == pytest.approx(f1_score(test, guess, average="macro", labels=range(3), zero_division=0))


def test_stratified_chance_is_the_expectation_of_sklearn_stratified_guessing():
    rng = np.random.default_rng(1)
    train = rng.choice(3, 400, p=[0.6, 0.3, 0.1])
    test = rng.choice(3, 300, p=[0.5, 0.3, 0.2])
    base = baselines.classification_baseline(train, test, NAMES)["stratified"]
    runs = [accuracy_score(test, DummyClassifier(strategy="stratified", random_state=s).fit(np.zeros((400, 1)), train)
                           .predict(np.zeros((300, 1)))) for s in range(300)]
    assert base["accuracy"] == pytest.approx(np.mean(runs), abs=0.005)


def test_training_mean_matches_sklearn_dummy_regressor():
    train, test = np.array([1.0, 2.0, 3.0, 10.0]), np.array([2.0, 4.0, 6.0, 7.0, 9.0])
    base = baselines.regression_baseline(train, test, counts=True)
    guess = DummyRegressor(strategy="mean").fit(np.zeros((4, 1)), train).predict(np.zeros((5, 1)))
    assert base["value"] == 4.0
    assert base["mae"] == pytest.approx(mean_absolute_error(test, guess))
    assert base["r2"] == pytest.approx(r2_score(test, guess))
    assert base["count_accuracy"] == pytest.approx(np.mean(np.round(guess) == test))


def _verdict(model_correct, base_correct):
    return baselines.verdict(metric="accuracy", model_scores=np.asarray(model_correct, float),
                             baseline_scores=np.asarray(base_correct, float), higher_is_better=True,
                             model_value=np.mean(model_correct), baseline_value=np.mean(base_correct),
                             n_resamples=500, confidence=0.95, seed=0)


def test_verdict_better_unclear_and_worse():
    n = 100
    base = np.r_[np.ones(30), np.zeros(70)]
    assert _verdict(np.ones(n), base)["verdict"] == baselines.BETTER
    slightly = base.copy()
    slightly[30:33] = 1  # 3 more right out of 100: the interval reaches zero
    assert _verdict(slightly, base)["verdict"] == baselines.UNCLEAR
    worse = _verdict(np.zeros(n), base)
    assert worse["verdict"] == baselines.WORSE
    assert "does NOT beat the baseline" in worse["text"]
    assert worse["improvement"]["high"] < 0


def test_regression_verdict_calls_a_model_worse_than_the_mean_worse():
    y = np.array([3.0, 5.0, 7.0, 9.0] * 10)
    base = baselines.regression_baseline(y, y, counts=True)
    far = baselines.regression_verdict(y, y + 10, base, n_resamples=200, confidence=0.95, seed=0)
    assert far["verdict"] == baselines.WORSE and far["metric"] == "mae"
    near = baselines.regression_verdict(y, y + 0.1, base, n_resamples=200, confidence=0.95, seed=0)
    assert near["verdict"] == baselines.BETTER
    no_ci = baselines.regression_verdict(y, y + 0.1, base, n_resamples=0, confidence=0.95, seed=0)
    assert no_ci["verdict"] == baselines.BETTER and "no bootstrap interval" in no_ci["text"]
