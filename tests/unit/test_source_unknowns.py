"""The run's OOD detector joined with the evaluation on another source (issue 29): the separation figures (AUROC and
FPR95 with bootstrap intervals), the typed ``Evaluation.unknowns`` record (shares with Wilson intervals, accuracy on
kept and flagged images), its place in metrics.json, the trackers and the report, the per-image columns, the image
pre-check of ``--data``, ``Run.metrics(name)`` and the refusals of ``--fit-unknowns``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from plantpheno.config import validate_config
from plantpheno.errors import ArgumentError, ConfigError, DataError, RunDirError
from plantpheno.evaluation.ood import OODDetector
from plantpheno.evaluation.ood_separation import separation
from plantpheno.evaluation.report import write_evaluation
from plantpheno.evaluation.report_source import _unknown_rows
from plantpheno.data.sources import Sample
from plantpheno.records.evaluation import Evaluation, read_evaluation
from plantpheno.reporting import RecordingReporter
from plantpheno.run.folder import RunDir
from plantpheno.source_eval import readable_images, summary_lines
from plantpheno.tracking.lifecycle import log_run_results
from plantpheno.tracking.local import LocalTracker
from plantpheno.tracking.session import TrackerSet
from plantpheno.training.unknown_figures import check_can_fit, record_in_evaluation, share, unknowns_record

DETECTOR = OODDetector(score="energy", threshold=1.0, keep=0.95, num_val_images=40, val_kept=0.95)


def test_separation_of_apart_and_alike_scores_with_intervals():
    rng = np.random.default_rng(0)
    apart = separation(rng.normal(0, 1, 200), rng.normal(6, 1, 300), n_resamples=200, confidence=0.95, seed=0)
    assert apart["num_in_source"] == 200 and apart["num_other"] == 300
    assert apart["auroc"]["estimate"] > 0.99 and apart["fpr95"]["estimate"] < 0.02
    alike = separation(rng.normal(0, 1, 200), rng.normal(0, 1, 300), n_resamples=200, confidence=0.95, seed=0)
    a = alike["auroc"]
    assert a["low"] < 0.5 < a["high"] and a["low"] <= a["estimate"] <= a["high"] and a["high"] - a["low"] < 0.2
    f = alike["fpr95"]
    assert f["low"] <= f["estimate"] <= f["high"] and 0.85 < f["estimate"] <= 1.0  # ~95 % of alike images kept
    again = separation(rng.normal(0, 1, 5), rng.normal(0, 1, 5), n_resamples=0, confidence=0.9, seed=0)
    assert "low" not in again["auroc"] and again["auroc"]["estimate"] is not None
    with pytest.raises(ValueError, match="at least one image on each side"):
        separation(np.array([]), np.array([1.0]), n_resamples=10, confidence=0.95, seed=0)


def test_unknowns_record_counts_shares_and_accuracy_on_kept_and_flagged_images():
    flagged = np.array([True, False, False, True, False, True])  # 4 images with a run class, then 2 without
    correct = np.array([False, True, True, True])
    found = unknowns_record(DETECTOR, flagged, correct=correct, confidence=0.95,
                            expected_unknown_flagged=share(1, 2, 0.95))
    assert (found.flagged.count, found.flagged.num_images, found.flagged.fraction) == (3, 6, 0.5)
    assert found.flagged.low < 0.5 < found.flagged.high and found.flagged.method == "Wilson"
    assert (found.known_accuracy.count, found.known_accuracy.num_images) == (2, 2)  # images 1, 2: both right
    assert (found.unknown_accuracy.count, found.unknown_accuracy.num_images) == (1, 2)  # images 0 (wrong), 3 (right)
    assert (found.val.count, found.val.num_images) == (2, 40)  # the threshold keeps 95 % of 40 validation images
    assert found.known_accuracy.high == 1.0 and found.expected_unknown_flagged.fraction == 0.5
    none = unknowns_record(DETECTOR, np.zeros(3, dtype=bool), correct=None, confidence=0.95)
    assert none.known_accuracy is None and none.unknown_accuracy is None and none.flagged.high < 1


def _evaluation(run: RunDir, name: str, **columns) -> Evaluation:
    y = np.array([0, 1, 1, 0])
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]], dtype=np.float32)
    return write_evaluation(run.eval(name), targets=y, outputs=probs, paths=[Path(f"/x/{i}.jpg") for i in range(4)],
                            class_names=["a", "b"], bootstrap_samples=50, confidence=0.95, seed=0,
                            extra={"split": name}, columns=columns or None)


def test_the_split_share_goes_into_metrics_json_and_the_trackers(tmp_path):
    run = RunDir(tmp_path / "run")
    before = _evaluation(run, "test")
    assert before.unknowns is None  # an evaluation without a detector (or an old file) has none
    found = unknowns_record(DETECTOR, np.array([True, False, False, False]), correct=np.ones(4, bool), confidence=0.95)
    record_in_evaluation(run, "test", found)
    after = read_evaluation(run.eval("test").metrics)
    assert after.unknowns == found and after.value("accuracy") == before.value("accuracy")
    assert after.values == before.values  # the record's block is not a metric value

    trackers = TrackerSet([LocalTracker(folder=run.tracking)])
    trackers.start(run_name="r")
    log_run_results(trackers, run, after.to_dict(), split="test", step=3, log_checkpoint=False)
    logged = {row["key"]: row["value"] for row in map(json.loads, run.tracking.metrics.read_text().splitlines())}
    assert logged["test/unknown_fraction"] == 0.25 and logged["test/val_unknown_fraction"] == 0.05
    assert logged["test/unknown_fraction_low"] < 0.25 < logged["test/unknown_fraction_high"]
    assert "test/val_unknown_fraction_high" in logged


def test_predictions_carry_the_ood_columns_and_the_summary_and_report_show_the_figures(tmp_path):
    run = RunDir(tmp_path / "run")
    _evaluation(run, "field", ood_score=["0.1", "2.0", "0.3", "5.0"], unknown=["false", "true", "false", "true"])
    header, first = run.eval("field").predictions.read_text().splitlines()[:2]
    assert header.endswith(",ood_score,unknown") and first.endswith(",0.1,false")
    sep = separation(np.zeros(10) + np.arange(10), np.arange(10) + 5.0, n_resamples=50, confidence=0.95, seed=0)
    found = unknowns_record(DETECTOR, np.array([False, True, False, True]), correct=np.ones(4, bool),
                            confidence=0.95, separation={"in_source": "test", **sep})
    rows = _unknown_rows(found)
    text = " ".join(str(cell) for row in rows for cell in row)
    assert "flagged unknown by the OOD detector (energy" in text and "2 of 4 (50.0%)" in text
    assert "AUROC, in-source test (10) vs this source (10)" in text and "FPR at 95 % TPR" in text
    assert "95% CI" in text
    assert "has no OOD detector" in _unknown_rows(None)[0][1]
    ev = Evaluation.model_validate({
        "task": "classification", "headline_metric": "accuracy", "split": "field", "accuracy": 0.5,
        "source": {"mapped": 4, "images": 4, "unmapped": 0, "unmapped_fraction": 0.0},
        "shift": {"calibration": {"ece_before": {"estimate": 0.1}}}, "unknowns": found.to_dict()})
    lines = summary_lines(ev)
    assert any("flagged unknown by energy: 2 of 4 (50.0%" in line and "AUROC vs in-source test" in line
               for line in lines)


def test_every_unreadable_image_of_the_other_source_is_named_before_any_is_predicted(tmp_path, cfg):
    good = tmp_path / "good.png"
    Image.new("RGB", (8, 8), (30, 120, 40)).save(good)
    bad = [tmp_path / "broken.jpg", tmp_path / "empty.png"]
    bad[0].write_bytes(b"\xff\xd8\xff not a jpeg")
    bad[1].write_bytes(b"")
    samples = [Sample(good, "a"), Sample(bad[0], "a"), Sample(bad[1], "b")]
    config = cfg()
    with pytest.raises(DataError) as err:
        readable_images(samples, tmp_path, config.data, None)
    message = str(err.value)
    assert "2 of 3 image(s)" in message and all(str(p) in message for p in bad) and "on_bad_image" in message
    skip = cfg(data={"on_bad_image": "skip"})
    reporter = RecordingReporter()
    kept, left = readable_images(samples, tmp_path, skip.data, reporter)
    assert [s.path for s in kept] == [good] and [p for p, _ in left] == bad
    assert any(level == "warning" and "left out" in m for level, m in reporter.lines)
    with pytest.raises(DataError, match="none of the 2 images"):
        readable_images(samples[1:], tmp_path, skip.data, None)


def test_run_metrics_reads_an_evaluation_on_another_source_by_its_name(tmp_path):
    import plantpheno as pp

    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "run.json").write_text('{"status": "completed"}')
    _evaluation(RunDir(folder), "field")
    run = pp.Run(folder)
    assert run.metrics("field")["split"] == "field"
    with pytest.raises(RunDirError, match=r"the run has field\)"):
        run.metrics("test")
    with pytest.raises(RunDirError, match=r"no evaluation named 'other'.*data=\.\.\., name='other'"):
        run.metrics("other")
    for bad in ("../x", "", 3):
        with pytest.raises(ArgumentError, match="split: got"):
            run.metrics(bad)


def test_fit_unknowns_is_refused_for_a_run_that_cannot_have_a_detector(tmp_path):
    base = {"data": {"root": str(tmp_path)}, "output_dir": str(tmp_path)}
    run = RunDir(tmp_path / "run")
    off = validate_config({**base, "evaluation": {"ood": {"enabled": False}}})
    assert check_can_fit(off, run, fit=False) is off
    with pytest.raises(ConfigError, match="evaluation.ood.enabled: false"):
        check_can_fit(off, run, fit=True)
    on = validate_config(base)
    assert check_can_fit(on, run, fit=True) is on
