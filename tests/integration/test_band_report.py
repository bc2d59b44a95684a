"""The HTML report of a band run: band importance, composites and Grad-CAM on band images (issue 31)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from plantpheno import pipeline
from plantpheno.config import validate_config
from conftest import tiny_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def leaves(tmp_path_factory) -> Path:
    from plantpheno.data.synth_bands import synthesize_multispectral

    return synthesize_multispectral(tmp_path_factory.mktemp("ms") / "set", per_class=12, image_size=32, seed=2)


def train(leaves: Path, tmp: Path, bands: list[str]) -> Path:
    raw = tiny_config(tmp, data={"root": str(leaves), "bands": bands}, training={"epochs": 1},
                      evaluation={"report": True, "report_examples": 2})
    return pipeline.train(validate_config(raw), handle_signals=False).run_dir


def test_a_band_run_writes_band_importance_and_a_report_with_rgb_composites(leaves, tmp_path) -> None:
    run = train(leaves, tmp_path, ["red", "green", "blue", "nir", "ndvi"])
    record = json.loads((run / "band_importance.json").read_text())
    assert sorted(r["band"] for r in record["bands"]) == ["blue", "green", "ndvi", "nir", "red"]
    assert record["split"] == "val" and all(r["drop"]["low"] is not None for r in record["bands"])
    html = (run / "report.html").read_text()
    assert 'id="bands"' in html and "Which bands matter" in html and "RGB composite of the red, green and blue" in html
    assert 'class="missing"' not in html  # every tile was read from its band file
    assert len(re.findall(r'alt="Grad-CAM of ', html)) >= 2
    assert "bands red, green, blue, nir, ndvi (data.bands;" in html  # the model card says what the model saw
    rebuilt = pipeline.report_run(run, split="test")  # `plantpheno report` rebuilds it
    assert 'id="bands"' in rebuilt.read_text()


def test_without_red_green_and_blue_the_report_shows_a_false_colour_composite(leaves, tmp_path) -> None:
    run = train(leaves, tmp_path, [{"name": "nir", "channel": 3}, {"name": "red", "channel": 0}])
    html = (run / "report.html").read_text()
    assert "false-colour composite of the first 2 bands, R = nir, G = red, B = nir" in html
    assert 'class="missing"' not in html and (run / "band_importance.json").is_file()


def test_an_rgb_run_writes_no_band_importance_and_no_bands_section(trained_run, disease_root) -> None:
    run = trained_run(data={"root": str(disease_root)}, evaluation={"report": True}).run_dir
    assert not (run / "band_importance.json").exists()
    assert 'id="bands"' not in (run / "report.html").read_text()


def test_a_band_trait_run_reports_band_importance_as_a_rise_in_mae(tmp_path) -> None:
    """A regression on band data (stress.csv of `data synth --kind multispectral`: the stressed share of each leaf,
    visible in NIR only): band_importance.json ranks bands by the rise in validation MAE, in the trait's units (the
    MAE with every band is the validation evaluation's), and the report shows it, readable in Chromium."""
    from plantpheno.data.synth_bands import synthesize_multispectral
    from report_browser import assert_report_ok

    leaves = synthesize_multispectral(tmp_path / "set", per_class=12, image_size=32, seed=7)
    raw = tiny_config(tmp_path, task="regression",
                      data={"manifest": str(leaves / "stress.csv"), "bands": ["red", "green", "blue", "nir", "ndvi"]},
                      training={"epochs": 2}, evaluation={"report": True, "report_examples": 2})
    run = pipeline.train(validate_config(raw), handle_signals=False).run_dir
    record = json.loads((run / "band_importance.json").read_text())
    assert (record["metric"], record["direction"], record["split"]) == ("mae", "min", "val")
    assert sorted(r["band"] for r in record["bands"]) == ["blue", "green", "ndvi", "nir", "red"]
    assert [r["rank"] for r in record["bands"]] == [1, 2, 3, 4, 5]
    for row in record["bands"]:  # drop = MAE without the band minus MAE with every band (positive: worse)
        assert row["drop"]["estimate"] == pytest.approx(row["value"] - record["baseline"]["estimate"], abs=1e-9)
        assert row["drop"]["low"] <= row["drop"]["estimate"] <= row["drop"]["high"]
    val = pipeline.evaluate_run(run, split="val")  # the same checkpoint and images, through the evaluation
    assert record["baseline"]["estimate"] == pytest.approx(val["mae"], rel=1e-4)
    html = (run / "report.html").read_text()
    assert 'id="bands"' in html and "Which bands matter" in html and "RGB composite of the red, green and blue" in html
    assert f"How much the mae on the val split ({record['num_images']} images) rises" in html
    assert "<th>mae without it</th>" in html and 'class="missing"' not in html
    assert "bands red, green, blue, nir, ndvi (data.bands;" in html
    check = assert_report_ok(run / "report.html", tmp_path / "report.png")
    assert "Which bands matter" in check.text
    rebuilt = pipeline.report_run(run, split="test")
    assert 'id="bands"' in rebuilt.read_text()
