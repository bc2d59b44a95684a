"""Real data: a tiny model learns the PlantVillage subset, honouring its block split (photo series kept together)."""

from __future__ import annotations

import json

import pytest

from conftest import PLANTVILLAGE
from plantpheno import pipeline
from plantpheno.config import validate_config

pytestmark = [
    pytest.mark.plantvillage,
    pytest.mark.skipif(not (PLANTVILLAGE / "splits.csv").is_file(),
                       reason=f"real PlantVillage subset not found at {PLANTVILLAGE} (present in CI, absent in a "
                              f"fresh clone)"),
]


def test_tiny_model_learns_plantvillage_with_its_own_split(tmp_path):
    from report_browser import assert_report_ok

    config = validate_config({
        "seed": 0, "output_dir": str(tmp_path / "runs"), "experiment": "plantvillage", "device": "cpu",
        "data": {"manifest": str(PLANTVILLAGE / "splits.csv"), "image_size": 64, "batch_size": 32},
        "model": {"backbone": "resnet10t"},
        "training": {"epochs": 4, "learning_rate": 0.002, "warmup_epochs": 0.5, "progress_bar": False},
        "evaluation": {"bootstrap_samples": 500},
    })
    result = pipeline.train(config)
    dataset = json.loads((result.run_dir / "dataset.json").read_text())
    assert dataset["num_images"] == {"train": 1570, "val": 337, "test": 343}
    assert len(dataset["class_names"]) == 15
    accuracy = result.metrics["accuracy"]
    # chance is 1/15 = 6.7 %; a from-scratch ResNet-10 at 64 px reaches far more within 4 epochs
    assert accuracy > 0.40, f"test accuracy {accuracy:.3f}"
    assert result.metrics["confidence_interval"]["low"] > 0.30
    # its report: the baseline (1 of 15 classes), calibration and the gallery, checked in a real browser
    assert result.metrics["baseline"]["verdict"]["verdict"] == "better"
    assert result.metrics["calibration"]["after"]["nll"] <= result.metrics["calibration"]["before"]["nll"] + 0.05
    check = assert_report_ok(result.run_dir / "report.html", tmp_path / "report.png")
    assert "Worst errors" in check.text and "Calibration" in check.text and len(check.images) > 20
