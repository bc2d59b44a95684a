"""Unknown-image detection joined with the evaluation on another source, end to end on tiny synthetic data: train
ends with evaluation.sources scored by the detector it has just fitted; ``evaluate --data`` writes the flagged share,
accuracy on kept/flagged images, AUROC/FPR95 against the test split and per-image columns, and the report shows them;
an unreadable image of the source is named before anything is predicted; a run without a detector gets one with
``evaluate --fit-unknowns`` (fitted on its train/val, stored with checksums)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

import plantpheno as pp
from conftest import tiny_config
from plantpheno.cli import main as cli
from plantpheno.data.synth import synthesize_disease
from plantpheno.evaluation.ood import DETECTOR_FILE, FEATURES_FILE, OODDetector


@pytest.fixture(scope="module")
def field(tmp_path_factory) -> Path:
    """Field-style images of the run's 4 classes plus a 'mosaic' folder the run has no class for."""
    root = synthesize_disease(tmp_path_factory.mktemp("field") / "field", per_class=6, image_size=48, seed=7,
                              style="field")
    (root / "mosaic").mkdir()
    for path in sorted((root / "rust").glob("*.jpg"))[:3]:
        shutil.copy(path, root / "mosaic" / path.name)
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, disease_root, field) -> Path:
    raw = tiny_config(tmp_path_factory.mktemp("run"), data={"root": str(disease_root)},
                      evaluation={"ood": {"k": 3}, "sources": [{"data": str(field), "name": "at_train"}]})
    return pp.train(raw, verbose=False).path


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_train_records_the_unknown_share_and_scores_its_sources_with_the_new_detector(run_dir):
    test = json.loads((run_dir / "eval" / "test" / "metrics.json").read_text())
    flagged = test["unknowns"]["flagged"]
    assert flagged["num_images"] == test["num_images"] and flagged["low"] <= flagged["fraction"] <= flagged["high"]
    assert test["unknowns"]["val"]["num_images"] > 0
    source = json.loads((run_dir / "eval" / "at_train" / "metrics.json").read_text())
    assert source["unknowns"]["flagged"]["num_images"] == 27  # 24 mapped + 3 mosaic: the detector was fitted first
    assert "OOD detector" in source["source"]["unknown"]["flagged_by"]
    assert pp.Run(run_dir).metrics("at_train")["unknowns"] == source["unknowns"]


def test_evaluate_data_writes_the_detector_figures_and_per_image_columns(run_dir, field, tmp_path, capsys):
    run = Path(shutil.copytree(run_dir, tmp_path / "run"))
    (run / "config.yaml").write_text((run / "config.yaml").read_text().replace("report: false", "report: true"))
    assert cli(["evaluate", str(run), "--data", str(field), "--name", "field"]) == 0
    assert "flagged unknown by energy+knn" in capsys.readouterr().out
    m = json.loads((run / "eval" / "field" / "metrics.json").read_text())
    unknowns = m["unknowns"]
    assert unknowns["flagged"]["num_images"] == 27 and unknowns["expected_unknown_flagged"]["num_images"] == 3
    kept, flagged = unknowns["known_accuracy"], unknowns["unknown_accuracy"]
    assert sum(s["num_images"] for s in (kept, flagged) if s) == 24
    sep = unknowns["separation"]
    test = json.loads((run / "eval" / "test" / "metrics.json").read_text())
    assert sep["num_in_source"] == test["num_images"] and sep["num_other"] == 27
    assert sep["auroc"]["low"] <= sep["auroc"]["estimate"] <= sep["auroc"]["high"]
    rows = _rows(run / "eval" / "field" / "predictions.csv")
    assert len(rows) == 24 and all(r["unknown"] in ("true", "false") and float(r["ood_score"]) == float(r["ood_score"])
                                   for r in rows)
    assert sum(r["unknown"] == "true" for r in rows) + sum(
        r["unknown"] == "true" for r in _rows(run / "eval" / "field" / "unmapped.csv")) == unknowns["flagged"]["count"]
    detector = OODDetector.load(run)
    assert all((float(r["ood_score"]) > detector.threshold) == (r["unknown"] == "true") for r in rows)
    report = (run / "report.html").read_text()
    assert "OOD score AUROC, in-source test" in report and "accuracy on the images kept as known" in report


def test_an_unreadable_image_of_the_source_is_named_before_anything_is_predicted(run_dir, field, tmp_path, capsys):
    source = Path(shutil.copytree(field, tmp_path / "field"))
    broken = [source / "rust" / "broken.jpg", source / "mosaic" / "empty.jpg"]
    broken[0].write_bytes(b"\xff\xd8\xff truncated")
    broken[1].write_bytes(b"")
    assert cli(["evaluate", str(run_dir), "--data", str(source), "--name", "broken"]) == 2
    err = capsys.readouterr().err
    assert "2 of 29 image(s)" in err and all(str(p) in err for p in broken) and "Traceback" not in err
    assert not (run_dir / "eval" / "broken").exists()


def test_fit_unknowns_gives_an_old_run_a_detector_from_its_train_and_val(run_dir, field, tmp_path, capsys):
    old = Path(shutil.copytree(run_dir, tmp_path / "old"))
    for name in (DETECTOR_FILE, FEATURES_FILE, DETECTOR_FILE + ".sha256", FEATURES_FILE + ".sha256"):
        (old / name).unlink()
    assert cli(["evaluate", str(old), "--data", str(field), "--name", "before"]) == 0
    assert "has no OOD threshold" in capsys.readouterr().err
    assert "unknowns" not in json.loads((old / "eval" / "before" / "metrics.json").read_text())

    assert cli(["evaluate", str(old), "--fit-unknowns"]) == 0
    detector = OODDetector.load(old)
    fitted = OODDetector.load(run_dir)
    assert detector.score == fitted.score and detector.num_val_images == fitted.num_val_images
    assert detector.num_train_images == fitted.num_train_images  # the train split's images, never test's
    assert (old / (DETECTOR_FILE + ".sha256")).is_file() and (old / (FEATURES_FILE + ".sha256")).is_file()
    assert json.loads((old / "eval" / "test" / "metrics.json").read_text())["unknowns"]["flagged"]["num_images"] > 0
    (old / DETECTOR_FILE).unlink()  # the API with data: fits again (test scored with it), then the source
    pp.evaluate(old, data=field, name="after", fit_unknowns=True, verbose=False)
    assert OODDetector.load(old).threshold == pytest.approx(detector.threshold)  # same weights, same train/val
    assert json.loads((old / "eval" / "after" / "metrics.json").read_text())["unknowns"]["separation"]
