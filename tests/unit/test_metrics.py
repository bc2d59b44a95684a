"""Tests for plantpheno.evaluation.metrics (scikit-learn serves as the reference)."""

from __future__ import annotations

import json
import math
import re
import time

import numpy as np
import pytest

from plantpheno.evaluation import metrics as M


def _sklearn():
    import sklearn.metrics  # the reference oracle; a test dependency, so a missing install fails here

    return sklearn.metrics


def _random_case(seed: int, num_classes: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, num_classes, n)
    y_pred = np.where(rng.random(n) < 0.6, y_true, rng.integers(0, num_classes, n))
    if num_classes >= 4:
        y_true[y_true == num_classes - 1] = 0  # last class absent from y_true ...
        y_pred[y_pred == 1] = 2  # ... and class 1 never predicted
    return y_true, y_pred


CLASSIFICATION_CASES = [
    *[(seed, 6, 60) for seed in range(4)],
    (10, 3, 7),
    (11, 10, 25),  # several classes neither in y_true nor predicted
    (12, 2, 500),
]


def _check_against_sklearn(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> None:
    skm = _sklearn()
    labels = list(range(num_classes))
    got = M.classification_metrics(y_true, y_pred, num_classes=num_classes)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    for average in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average=average, zero_division=0)
        assert [got[f"{average}_{k}"] for k in ("precision", "recall", "f1")] == pytest.approx([p, r, f])
    p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    per_class = got["per_class"]
    assert per_class["precision"] == pytest.approx(p.tolist())
    assert per_class["recall"] == pytest.approx(r.tolist())
    assert per_class["f1"] == pytest.approx(f.tolist())
    assert per_class["support"] == s.tolist()
    assert got["confusion_matrix"] == skm.confusion_matrix(y_true, y_pred, labels=labels).tolist()
    assert got["num_samples"] == len(y_true)


@pytest.mark.parametrize(("seed", "num_classes", "n"), CLASSIFICATION_CASES)
def test_classification_matches_sklearn(seed: int, num_classes: int, n: int) -> None:
    _check_against_sklearn(*_random_case(seed, num_classes, n), num_classes)


@pytest.mark.filterwarnings("ignore:A single label was found:UserWarning")
def test_classification_perfect_and_single_class() -> None:
    y = np.array([0, 1, 2, 2, 1, 0, 0])
    _check_against_sklearn(y, y.copy(), 5)  # perfect, with two unused classes
    perfect = M.classification_metrics(y, y, num_classes=3)
    assert perfect["accuracy"] == perfect["macro_f1"] == perfect["weighted_recall"] == 1.0
    one = M.classification_metrics(np.zeros(4, int), np.zeros(4, int), num_classes=1)
    assert one["accuracy"] == 1.0 and one["macro_f1"] == 1.0 and one["confusion_matrix"] == [[4]]
    _check_against_sklearn(np.zeros(4, int), np.zeros(4, int), 1)


def test_classification_result_is_plain_json() -> None:
    result = M.classification_metrics(*_random_case(0, 6, 60), num_classes=6)
    json.dumps(result)  # no numpy scalars
    assert all(type(v) is float for k, v in result.items() if k not in ("per_class", "confusion_matrix", "num_samples"))
    assert type(result["num_samples"]) is int
    assert all(type(v) is int for row in result["confusion_matrix"] for v in row)
    assert all(type(v) is float for v in result["per_class"]["f1"])


def test_classification_accepts_integral_floats_and_lists() -> None:
    a = M.classification_metrics([0, 1, 1], np.array([0.0, 1.0, 0.0]), num_classes=2)
    assert a["accuracy"] == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("y_true", "y_pred", "num_classes", "match"),
    [
        ([0, 3], [0, 1], 3, "outside"),
        ([0, 1], [0, -1], 3, "outside"),
        ([0, 1], [0], 3, "length"),
        ([], [], 3, "empty"),
        ([0, 1], [0.5, 1], 3, "integer"),
        ([[0, 1]], [[0, 1]], 3, "1-D"),
        ([0, 1], [0, 1], 0, "num_classes"),
    ],
)
def test_classification_rejects_bad_input(y_true, y_pred, num_classes, match) -> None:
    with pytest.raises(ValueError, match=match):
        M.classification_metrics(np.array(y_true), np.array(y_pred), num_classes=num_classes)


# --------------------------------------------------------------------------- regression


@pytest.mark.parametrize("seed", range(4))
def test_regression_matches_sklearn(seed: int) -> None:
    skm = _sklearn()
    rng = np.random.default_rng(seed)
    y_true = rng.normal(10, 3, 50)
    y_pred = y_true + rng.normal(0.5, 2, 50)
    got = M.regression_metrics(y_true, y_pred)
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(y_true, y_pred))
    assert got["rmse"] == pytest.approx(math.sqrt(skm.mean_squared_error(y_true, y_pred)))
    assert got["r2"] == pytest.approx(skm.r2_score(y_true, y_pred))
    assert got["mean_error"] == pytest.approx(float(np.mean(y_pred - y_true)))
    assert got["num_samples"] == 50
    json.dumps(got)


@pytest.mark.parametrize(
    ("y_true", "y_pred"),
    [([3.0, 3.0, 3.0], [3.0, 3.0, 3.0]), ([3.0, 3.0, 3.0], [2.0, 3.0, 4.0]), ([1.0, 2.0], [1.0, 2.0]), ([5.0], [4.0])],
)
def test_r2_edge_cases_match_sklearn(y_true, y_pred) -> None:
    skm = _sklearn()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns for a single sample
        expected = skm.r2_score(y_true, y_pred)
    got = M.regression_metrics(np.array(y_true), np.array(y_pred))["r2"]
    assert got == pytest.approx(expected, nan_ok=True)


def test_r2_constant_true_with_rounding_noise() -> None:
    y = np.full(3, 0.1)  # mean(y) != 0.1 exactly in floating point
    assert M.r2_score(y, y) == 1.0
    assert M.r2_score(y, y + 1) == 0.0


def test_count_metrics_hand_worked() -> None:
    # round(pred) (halves away from zero): 4, 6, 3, 8, 5  vs true 4, 5, 4, 8, 7
    # differences: 0, +1, -1, 0, -2 -> DiC = -2/5 = -0.4, |DiC| = 4/5 = 0.8, exact hits 2/5
    y_true = np.array([4, 5, 4, 8, 7])
    y_pred = np.array([4.2, 5.5, 2.5, 7.6, 4.9])
    got = M.regression_metrics(y_true, y_pred, counts=True)
    assert got["dic"] == pytest.approx(-0.4)
    assert got["abs_dic"] == pytest.approx(0.8)
    assert got["count_accuracy"] == pytest.approx(0.4)
    assert got["count_within_one"] == pytest.approx(0.8)  # all but the -2
    assert M.rounded_counts(y_pred).tolist() == [4, 6, 3, 8, 5]
    ci = M.bootstrap_ci(M.count_within_one, y_true, y_pred, n_resamples=200, seed=1)
    looped = M.bootstrap_ci(lambda t, p: M.count_within_one(t, p), y_true, y_pred, n_resamples=200, seed=1)
    assert ci == looped and ci["low"] <= 0.8 <= ci["high"]
    assert got["mean_error"] == pytest.approx(np.mean(y_pred - y_true))
    assert "dic" not in M.regression_metrics(y_true, y_pred)


def test_regression_rejects_non_finite() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        M.regression_metrics(np.array([1.0, 2.0]), np.array([1.0, np.nan]))


# --------------------------------------------------------------------------- bootstrap


def _accuracy_case(n: int, acc: float) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.zeros(n, dtype=int)
    y_pred = np.zeros(n, dtype=int)
    y_pred[: int(round(n * (1 - acc)))] = 1
    return y_true, y_pred


def test_bootstrap_contains_estimate_and_has_known_width() -> None:
    y_true, y_pred = _accuracy_case(400, 0.8)
    ci = M.bootstrap_ci(M.accuracy, y_true, y_pred, n_resamples=2000, seed=1)
    assert ci["estimate"] == pytest.approx(0.8)
    assert ci["low"] <= ci["estimate"] <= ci["high"]
    half_width = (ci["high"] - ci["low"]) / 2
    normal = 1.96 * math.sqrt(0.8 * 0.2 / 400)  # ~0.039
    assert half_width == pytest.approx(normal, rel=0.3)
    assert {k: ci[k] for k in ("confidence", "n_resamples", "method")} == {
        "confidence": 0.95, "n_resamples": 2000, "method": "percentile bootstrap"}
    json.dumps(ci)


def test_bootstrap_narrows_with_more_samples_and_lower_confidence() -> None:
    small = M.bootstrap_ci(M.accuracy, *_accuracy_case(100, 0.8), n_resamples=500)
    large = M.bootstrap_ci(M.accuracy, *_accuracy_case(2500, 0.8), n_resamples=500)
    assert large["high"] - large["low"] < 0.5 * (small["high"] - small["low"])
    narrow = M.bootstrap_ci(M.accuracy, *_accuracy_case(100, 0.8), n_resamples=500, confidence=0.5)
    assert narrow["high"] - narrow["low"] < small["high"] - small["low"]


def test_bootstrap_is_deterministic_by_seed_and_same_for_wrapped_metric() -> None:
    rng = np.random.default_rng(0)
    y_true = rng.normal(size=200)
    y_pred = y_true + rng.normal(size=200)
    for metric in (M.mean_absolute_error, M.root_mean_squared_error, M.r2_score, M.mean_error):
        first = M.bootstrap_ci(metric, y_true, y_pred, n_resamples=300, seed=7)
        assert M.bootstrap_ci(metric, y_true, y_pred, n_resamples=300, seed=7) == first
        other = M.bootstrap_ci(metric, y_true, y_pred, n_resamples=300, seed=8)
        assert (other["low"], other["high"]) != (first["low"], first["high"])
        wrapped = M.bootstrap_ci(lambda t, p, m=metric: m(t, p), y_true, y_pred, n_resamples=300, seed=7)
        assert wrapped == pytest.approx(first)


def test_bootstrap_vectorised_and_loop_paths_agree_across_index_blocks(monkeypatch) -> None:
    monkeypatch.setattr(M, "_BLOCK_ELEMENTS", 1000)  # 50 samples -> 20 resamples per block
    y_true, y_pred = _random_case(3, 6, 50)
    fast = M.bootstrap_ci(M.accuracy, y_true, y_pred, n_resamples=95, seed=3)
    slow = M.bootstrap_ci(lambda t, p: M.accuracy(t, p), y_true, y_pred, n_resamples=95, seed=3)
    assert fast == slow


def test_bootstrap_generic_callable_and_2d_predictions() -> None:
    y_true, y_pred = _random_case(1, 6, 80)

    def macro_f1(t: np.ndarray, p: np.ndarray) -> float:
        return M.classification_metrics(t, p, num_classes=6)["macro_f1"]

    ci = M.bootstrap_ci(macro_f1, y_true, y_pred, n_resamples=200)
    assert ci["low"] <= ci["estimate"] <= ci["high"]
    scores = np.eye(6)[y_pred]  # (n, classes) scores, resampled along axis 0
    ci2 = M.bootstrap_ci(lambda t, s: M.accuracy(t, s.argmax(axis=1)), y_true, scores, n_resamples=200)
    assert ci2["estimate"] == pytest.approx(M.accuracy(y_true, y_pred))


def test_bootstrap_is_fast() -> None:
    y_true, y_pred = _accuracy_case(10_000, 0.8)
    start = time.perf_counter()
    M.bootstrap_ci(M.accuracy, y_true, y_pred, n_resamples=1000)
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize(
    ("options", "match"),
    [({"n_resamples": 0}, "n_resamples"), ({"n_resamples": 2.5}, "n_resamples"),
     ({"confidence": 1.0}, "confidence"), ({"confidence": 0.0}, "confidence")],
)
def test_bootstrap_rejects_bad_options(options, match) -> None:
    with pytest.raises(ValueError, match=match):
        M.bootstrap_ci(M.accuracy, np.array([0, 1]), np.array([0, 1]), **options)


def test_bootstrap_rejects_mismatched_data() -> None:
    with pytest.raises(ValueError, match="length"):
        M.bootstrap_ci(M.accuracy, np.array([0, 1]), np.array([0]))


# --------------------------------------------------------------------------- report


def test_classification_report_lists_classes_with_aligned_columns() -> None:
    names = ["Apple___healthy", "Tomato___Tomato_Yellow_Leaf_Curl_Virus", "x", "Grape___Esca_(Black_Measles)"]
    y_true, y_pred = _random_case(5, 4, 80)
    result = M.classification_metrics(y_true, y_pred, num_classes=4)
    text = M.format_classification_report(result, names)
    lines = text.splitlines()
    for name in names:
        assert any(line.startswith(name + " ") for line in lines)
    rows = [line for line in lines if line.strip() and "accuracy" not in line]
    # every numeric cell ends in the same columns as the header words
    header_ends = [m.end() for m in re.finditer(r"\S+", lines[0])]
    assert len(header_ends) == 4
    for line in rows[1:]:
        assert [m.end() for m in re.finditer(r"\S+", line)][-4:] == header_ends
    accuracy_line = next(line for line in lines if line.startswith("accuracy"))
    assert [m.end() for m in re.finditer(r"\S+", accuracy_line)][-2:] == header_ends[-2:]
    assert f"{result['accuracy']:.4f}" in accuracy_line
    assert "macro avg" in text and "weighted avg" in text


def test_classification_report_checks_name_count() -> None:
    result = M.classification_metrics(np.array([0, 1]), np.array([0, 1]), num_classes=2)
    with pytest.raises(ValueError, match="class names"):
        M.format_classification_report(result, ["only one"])


def test_headline_metrics_exist() -> None:
    from plantpheno.tasks import TASKS

    assert {name: t.headline for name, t in TASKS.items()} == {"classification": "accuracy", "regression": "mae"}
    for task in TASKS.values():
        assert task.headline in M.METRIC_FUNCTIONS
