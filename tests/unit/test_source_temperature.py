"""The other source's own temperature (``evaluate --data --calibrate-on``): fitted on the source's labelled
calibration images, judged on the evaluated images, with intervals that also carry the fit's uncertainty."""

from __future__ import annotations

import numpy as np
import pytest

from plantpheno.evaluation.calibration import reliability, softmax
from plantpheno.evaluation.shift import CalibrationSet, shift_summary, source_temperature

BOOT = {"n_resamples": 300, "confidence": 0.95, "seed": 0}


def _overconfident(n: int, *, seed: int, true_t: float = 3.0, k: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Logits of a model over-confident by ``true_t`` (labels drawn from softmax(logits / true_t)), as a lab model
    is on field images."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 4.0, (n, k))
    probs = softmax(logits, true_t)
    return logits, np.array([rng.choice(k, p=p) for p in probs])


def test_a_temperature_fitted_on_the_calibration_images_lowers_the_ece_of_the_evaluated_ones():
    cal_logits, cal_y = _overconfident(200, seed=1)
    logits, y = _overconfident(400, seed=2)
    out = source_temperature(logits, y, CalibrationSet(cal_logits, cal_y, "field_val.csv"), bins=15, boot=BOOT)
    assert out["applied"] and out["fitted_on"] == "field_val.csv" and out["num_images"] == 200
    assert 2.0 < out["temperature"] < 4.5  # near the true 3
    before = reliability(softmax(logits), y, bins=15)["ece"]
    after = out["ece_after"]
    assert after["estimate"] == pytest.approx(reliability(softmax(logits, out["temperature"]), y, bins=15)["ece"])
    assert after["estimate"] < before / 2
    assert after["low"] <= after["estimate"] <= after["high"]
    change = out["ece_change"]
    assert change["estimate"] == pytest.approx(after["estimate"] - before)
    assert change["high"] < 0  # the improvement is beyond the resampling noise
    assert "refitted" in change["method"]


def test_the_interval_widens_with_fewer_calibration_images():
    """The temperature of 12 images is uncertain; the interval says so (it refits on each resample)."""
    logits, y = _overconfident(400, seed=2)
    width = {}
    for m in (12, 400):
        cal_logits, cal_y = _overconfident(m, seed=3)
        block = source_temperature(logits, y, CalibrationSet(cal_logits, cal_y, "cal"), bins=15, boot=BOOT)
        width[m] = block["ece_after"]["high"] - block["ece_after"]["low"]
    assert width[12] > width[400]


def test_separated_calibration_images_apply_no_temperature_and_say_why():
    cal_y = np.arange(20) % 4
    cal_logits = np.eye(4)[cal_y] * 10.0  # every image right, with a margin: NLL falls as T -> 0
    logits, y = _overconfident(50, seed=4)
    out = source_temperature(logits, y, CalibrationSet(cal_logits, cal_y, "cal"), bins=15, boot=BOOT)
    assert not out["applied"] and out["temperature"] == 1.0 and out["ece_after"] is None
    assert "perfectly separated" in out["not_applied"] and out["calibration_accuracy"] == 1.0


def test_the_shift_block_carries_the_source_temperature_only_when_given():
    logits, y = _overconfident(60, seed=5)
    common = {"source_logits": logits, "source_targets": y, "test_targets": None, "test_predicted": None,
              "class_names": ["a", "b", "c", "d"], "temperature": 1.0, "temperature_applied": False, "bins": 10,
              "bootstrap_samples": 50, "confidence": 0.95, "seed": 0}
    assert "source_temperature" not in shift_summary(**common)["calibration"]
    cal = CalibrationSet(*_overconfident(40, seed=6), origin="cal")
    block = shift_summary(**common, calibration_set=cal)["calibration"]["source_temperature"]
    assert block["applied"] and block["ece_after"]["n_resamples"] == 50


def test_calibration_images_of_a_configured_source_are_checked_before_training(make_config, tmp_path):
    """evaluation.sources[].calibrate_on is read and mapped before training; sharing an image with the evaluated
    source is refused there, naming the entry."""
    from PIL import Image

    from plantpheno.errors import DataError
    from plantpheno.source_eval import check_sources

    for folder in ("field", "field_val"):
        (tmp_path / folder / "rust").mkdir(parents=True)
        Image.new("RGB", (8, 8), (40, 120, 40)).save(tmp_path / folder / "rust" / "a.jpg")
    (tmp_path / "lab").mkdir()

    def config(calibrate_on: str):
        return make_config(data={"root": str(tmp_path / "lab")}, evaluation={"sources": [
            {"data": str(tmp_path / "field"), "calibrate_on": str(tmp_path / calibrate_on)}]})

    check_sources(config("field_val"), ["healthy", "rust"])
    with pytest.raises(DataError, match=r"evaluation.sources\[0\]: calibration images .*field share 1 image"):
        check_sources(config("field"), ["healthy", "rust"])
    with pytest.raises(DataError, match=r"evaluation.sources\[0\]: .*missing"):
        check_sources(config("missing"), ["healthy", "rust"])
