"""Evaluation on another source and adaptation, end to end on tiny synthetic data: a lab-style run evaluated on
field-style images through a class map (CLI and API, eval/<name>/ contents, the report section, evaluation.sources
at the end of train), then a run started from it with model.init_from (lineage, classes extended), and the bad
inputs: each one line and exit status 2."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import plantpheno as pp
from conftest import tiny_config
from plantpheno.data.synth import synthesize_disease
from plantpheno.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def field(tmp_path_factory) -> tuple[Path, Path]:
    """Field-style images of the same 4 classes plus a 'mosaic' folder the run has no class for, and a class map
    that renames two labels and marks mosaic unknown."""
    root = synthesize_disease(tmp_path_factory.mktemp("field") / "field", per_class=8, image_size=48, seed=7,
                              style="field")
    (root / "leaf_spot").rename(root / "Spots")
    (root / "mosaic").mkdir()
    for path in sorted((root / "rust").glob("*.jpg"))[:3]:
        shutil.copy(path, root / "mosaic" / path.name)
    cmap = root.parent / "map.yaml"
    cmap.write_text("Spots: leaf_spot\nhealthy: healthy\nrust: rust\nblight: blight\nmosaic: unknown\n")
    return root, cmap


@pytest.fixture(scope="module")
def lab_run(tmp_path_factory, disease_root) -> Path:
    tmp = tmp_path_factory.mktemp("lab")
    return pp.train(tiny_config(tmp, data={"root": str(disease_root)}, evaluation={"report": True}),
                    verbose=False).path


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "plantpheno", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=600)


def test_evaluate_on_another_source_writes_its_eval_folder(lab_run, field, tmp_path):
    run = Path(shutil.copytree(lab_run, tmp_path / "run"))
    root, cmap = field
    done = _cli("evaluate", str(run), "--data", str(root), "--class-map", str(cmap), "--name", "field")
    assert done.returncode == 0, done.stderr
    assert "drop from the in-source test accuracy" in done.stdout and "expected unknown" in done.stdout
    out = run / "eval" / "field"
    assert {"metrics.json", "predictions.csv", "per_class.csv", "classification_report.txt",
            "unmapped.csv"} <= {p.name for p in out.iterdir()}
    m = json.loads((out / "metrics.json").read_text())
    assert m["split"] == "field" and m["num_images"] == 32 and m["source"]["unmapped"] == 3
    assert m["source"]["unmapped_fraction"] == pytest.approx(3 / 35)
    drop = m["shift"]["drop"]["accuracy"]
    test = json.loads((run / "eval" / "test" / "metrics.json").read_text())
    assert drop["in_source"] == pytest.approx(test["accuracy"]) and drop["source"] == pytest.approx(m["accuracy"])
    assert drop["low"] <= drop["drop"] <= drop["high"]
    assert [r["class"] for r in m["shift"]["per_class"]] == test["class_names"]
    assert m["shift"]["calibration"]["ece_before"]["low"] is not None
    assert m["separability"]["accuracy"] is not None
    with (out / "predictions.csv").open(newline="") as fh:
        labels = {row["label"] for row in csv.DictReader(fh)}
    assert labels <= set(test["class_names"])  # mapped to the run's names ("Spots" -> leaf_spot)
    assert "On another source" in (run / "report.html").read_text()  # the report was rebuilt with the section
    again = pp.evaluate(run, data=root, class_map=cmap, name="field2", verbose=False)
    assert again["accuracy"] == m["accuracy"] and (run / "eval" / "field2" / "metrics.json").is_file()


@pytest.mark.parametrize("content, expected", [
    ("Spots: spots\n", "'Spots' maps to 'spots', which is not a class of the run"),
    ("- healthy\n- rust\n", "is a list; expected a mapping 'source label: run class'"),
    ("mosaic: unknown\n", "maps none of them to a run class"),
])
def test_bad_class_maps_are_refused_with_what_was_expected(lab_run, field, tmp_path, content, expected):
    root, _ = field
    cmap = tmp_path / "map.yaml"
    cmap.write_text(content)
    with pytest.raises(DataError, match=expected):
        pp.evaluate(lab_run, data=root, class_map=cmap, verbose=False)
    assert not (lab_run / "eval" / "field").exists()


def test_a_bad_class_map_on_the_command_line_is_one_line_and_exit_2(lab_run, field, tmp_path):
    root, _ = field
    cmap = tmp_path / "map.yaml"
    cmap.write_text("Spots: spots\n")
    done = _cli("evaluate", str(lab_run), "--data", str(root), "--class-map", str(cmap))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and "which is not a class of the run" in done.stderr


def test_a_temperature_fitted_on_other_images_of_the_source_and_overlap_refused(lab_run, field, tmp_path):
    """--calibrate-on: the source's own temperature with the ECE after it; the evaluated images themselves are
    refused as calibration images (one line, exit 2)."""
    root, cmap = field
    run = Path(shutil.copytree(lab_run, tmp_path / "run"))
    cal = synthesize_disease(tmp_path / "cal", per_class=6, image_size=48, seed=8, style="field")
    (cal / "leaf_spot").rename(cal / "Spots")  # labelled as the source labels its images (the class map applies)
    done = _cli("evaluate", str(run), "--data", str(root), "--class-map", str(cmap), "--name", "field",
                "--calibrate-on", str(cal))
    assert done.returncode == 0, done.stderr
    own = json.loads((run / "eval" / "field" / "metrics.json").read_text())["shift"]["calibration"]
    own = own["source_temperature"]
    assert own["fitted_on"] == str(cal) and own["num_images"] == 24
    if own["applied"]:  # 24 tiny images might be separated by chance: then it says so instead
        assert own["ece_after"]["low"] <= own["ece_after"]["estimate"] <= own["ece_after"]["high"]
        assert "after the source's temperature" in done.stdout
    else:
        assert "perfectly separated" in own["not_applied"]
    same = _cli("evaluate", str(run), "--data", str(root), "--class-map", str(cmap), "--calibrate-on", str(root))
    assert same.returncode == 2 and "Traceback" not in same.stderr and same.stderr.strip().count("\n") == 0
    assert "share 32 image(s) with the evaluated source" in same.stderr


def test_train_ends_with_evaluation_sources_and_init_from_records_the_parent(lab_run, field, tmp_path):
    root, cmap = field
    raw = tiny_config(tmp_path, data={"root": str(root)}, model={"init_from": str(lab_run)},
                      evaluation={"sources": [{"data": str(root), "name": "same"}]})  # its own classes: no map
    run = pp.train(raw, verbose=False)
    checkpoint = torch.load(run.path / "checkpoints" / "best.pt", weights_only=True)
    parent = checkpoint["meta"]["parent_model"]
    assert parent["kind"] == "run" and parent["run_dir"] == str(lab_run.resolve())
    # the field folder has Spots and mosaic where the lab run has leaf_spot: those two are new head rows
    assert parent["classes_kept"] == ["blight", "healthy", "rust"] and parent["classes_new"] == ["Spots", "mosaic"]
    assert parent["classes_dropped"] == ["leaf_spot"]
    assert (run.path / "eval" / "same" / "metrics.json").is_file()
    version = pp.register_model(run, "fieldnet", registry=f"sqlite:///{tmp_path / 'reg.db'}", force=True)
    assert version.tags["parent_model"] == str(lab_run)


def test_init_from_bad_inputs_fail_before_a_run_folder_exists(lab_run, field, tmp_path):
    root, _ = field
    common = ["data.image_size=32", "data.num_workers=0", "device=cpu", "training.epochs=2",
              "data.checks.enabled=false", "tracking.backends=[]", f"output_dir={tmp_path / 'runs'}",
              f"data.root={root}"]
    for ref, backbone, expected in [
        (str(lab_run), "resnet18", "its backbone is 'test_resnet' and this config's model.backbone is 'resnet18'"),
        (str(root), "test_resnet", "is a folder without config.yaml, not a run directory"),
        (str(tmp_path / "nowhere"), "test_resnet", "does not exist as a run directory and is not a registered"),
    ]:
        done = _cli("train", "demo", f"model.backbone={backbone}", f"model.init_from={ref}", *common)
        assert done.returncode == 2 and expected in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("config.yaml"))


def test_init_from_a_regression_run_is_refused_for_classification(rosette_manifest, field, tmp_path):
    root, _ = field
    traits = pp.train(tiny_config(tmp_path / "t", task="regression", data={"manifest": str(rosette_manifest)}),
                      verbose=False)
    with pytest.raises(ConfigError, match="it is a regression model and this config trains classification"):
        pp.train(tiny_config(tmp_path / "c", data={"root": str(root)}, model={"init_from": str(traits.path)}),
                 verbose=False)
