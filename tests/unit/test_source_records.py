"""The features merged beside the records read them by attribute: the budget leaderboard's score of a validation
evaluation, and an evaluation on another source (its extra blocks kept on disk as they were, its summary lines and
the report's intervals read from the record)."""

from __future__ import annotations

import json
import math

import pytest

from plantpheno.budget.leaderboard import score_of
from plantpheno.evaluation.report_source import _interval
from plantpheno.records.evaluation import Evaluation, build_evaluation
from plantpheno.source_eval import summary_lines

CI = {"metric": "accuracy", "estimate": 0.8, "low": 0.7, "high": 0.9, "confidence": 0.95, "n_resamples": 200}
DROP = {"in_source": 0.95, "source": 0.8, "drop": 0.15, "low": 0.05, "high": 0.25, "confidence": 0.95}
SOURCE_FILE = {  # as source_eval writes eval/<name>/metrics.json
    "task": "classification", "headline_metric": "accuracy", "accuracy": 0.8, "macro_f1": 0.75,
    "class_names": ["a", "b"], "confidence_interval": CI, "split": "field", "num_images": 32,
    "checkpoint_epoch": 3,
    "source": {"data": "/x/field", "images": 35, "mapped": 32, "unmapped": 3, "unmapped_fraction": 3 / 35},
    "shift": {"macro_f1_interval": {"low": 0.6, "high": 0.85, "confidence": 0.95},
              "drop": {"accuracy": DROP, "macro_f1": None}, "per_class": None,
              "calibration": {"temperature": 1.5, "ece_before": {"estimate": 0.12, "low": 0.08, "high": 0.16},
                              "ece_after": {"estimate": 0.06, "low": 0.03, "high": 0.09}}},
    "separability": {"accuracy": 0.97, "majority": 0.55, "ci95": [0.95, 0.99]},
    "worst_errors": [{"path": "/x/1.jpg", "label": "a", "predicted": "b", "confidence": 0.9}],
}


def test_the_budget_score_is_the_records_metric_with_the_interval_of_that_metric():
    ev = build_evaluation(task="classification", headline_metric="accuracy",
                          metrics={"accuracy": 0.8, "macro_f1": 0.7, "confidence_interval": CI})
    assert score_of(ev, "accuracy") == (0.8, (0.7, 0.9))
    assert score_of(ev, "macro_f1") == (0.7, None)  # the interval is the headline's, not this metric's


def test_the_budget_score_of_a_non_finite_or_missing_metric():
    ev = Evaluation.from_dict({"task": "regression", "headline_metric": "mae", "mae": float("nan")})
    value, interval = score_of(ev, "mae")
    assert math.isnan(value) and interval is None
    with pytest.raises(KeyError, match="no metric 'rmse'"):
        score_of(ev, "rmse")


def test_an_evaluation_on_another_source_keeps_its_file_and_reads_by_attribute():
    ev = Evaluation.from_dict(SOURCE_FILE)
    assert ev.is_other_source and not Evaluation.from_dict({"task": "t", "headline_metric": "m"}).is_other_source
    assert json.loads(ev.to_json()) == SOURCE_FILE  # the on-disk format is unchanged
    assert ev.source["unmapped"] == 3 and ev.separability["accuracy"] == 0.97
    assert ev.values == {"accuracy": 0.8, "macro_f1": 0.75}  # the blocks are not metric values


def test_the_summary_lines_of_another_source_come_from_the_record():
    lines = summary_lines(Evaluation.from_dict(SOURCE_FILE))
    assert lines[0] == ("field (32 images with a run class): accuracy 0.8000 (95% CI 0.7000 to 0.9000)  "
                        "macro-F1 0.7500")
    assert "drop from the in-source test accuracy 0.9500: 0.1500 (CI 0.0500 to 0.2500)" in lines[1]
    assert ("ECE 0.1200 (CI 0.0800 to 0.1600) before the temperature, 0.0600 (CI 0.0300 to 0.0900) after "
            "(T = 1.5)") in lines[2]
    assert "3 of 35" in lines[3] and "97.0%" in lines[4]


def test_the_reports_intervals_from_a_record_or_a_shift_mapping():
    assert _interval(Evaluation.from_dict(SOURCE_FILE).confidence_interval) == "95% CI 0.7000 to 0.9000"
    assert _interval(DROP) == "95% CI 0.0500 to 0.2500"
    assert _interval({"low": 0.1, "high": 0.2, "class": "a"}) == "0.1000 to 0.2000"  # per-class rows: no level
    assert _interval({"low": None, "high": None}) == "" and _interval(None) == ""
