"""The OOD detector end to end: fitted by train, applied by evaluate, predict (CLI), the API and the served pyfunc
model; a model without one (made before plantpheno fitted one) still loads and says so in one line."""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from plantpheno.cli import main as cli
from plantpheno.evaluation.ood import DETECTOR_FILE, FEATURES_FILE, OODDetector


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, disease_root) -> Path:
    from plantpheno import pipeline
    from plantpheno.config import validate_config

    from conftest import tiny_config

    raw = tiny_config(tmp_path_factory.mktemp("ood"), data={"root": str(disease_root)},
                      evaluation={"ood": {"k": 3}})  # the default score, energy+knn
    return pipeline.train(validate_config(raw)).run_dir


def _images(disease_root: Path, n: int = 3) -> list[Path]:
    return sorted(disease_root.rglob("*.jpg"))[:n]


def _flag_everything(folder: Path) -> None:
    """Rewrite the detector (with its checksum) so that every image is past its threshold."""
    detector = OODDetector.load(folder)
    replace(detector, threshold=-1e9).save(folder)


def test_train_fits_the_detector_on_train_val_and_evaluation_reports_the_unknown_fraction(run_dir):
    detector = OODDetector.load(run_dir)
    assert detector is not None and detector.score == "energy+knn" and detector.k == 3
    assert detector.val_kept >= 0.95 and detector.bank.dtype.name == "float16"
    assert (run_dir / (FEATURES_FILE + ".sha256")).is_file()
    block = json.loads((run_dir / "eval" / "test" / "unknown.json").read_text())
    assert block["num_images"] > 0 and 0 <= block["unknown_fraction"] <= 1
    low, high = block["unknown_interval"]
    assert low <= block["unknown_fraction"] <= high
    selective = block["selective"]
    assert selective["chosen_on"] == "val" and selective["curve"]["coverage"][-1] == 1.0
    assert "ood" not in json.loads((run_dir / "eval" / "test" / "metrics.json").read_text())  # its own file


def test_predict_cli_writes_ood_score_and_unknown_and_can_label_unknowns(run_dir, disease_root, tmp_path, capsys):
    images = _images(disease_root)
    out = tmp_path / "preds.csv"
    assert cli(["predict", str(run_dir), *map(str, images), "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 3
    assert all(r["unknown"] in ("true", "false") and np.isfinite(float(r["ood_score"])) for r in rows)
    assert "no OOD threshold" not in capsys.readouterr().err

    flagged = tmp_path / "flagged"
    shutil.copytree(run_dir, flagged)
    _flag_everything(flagged)
    assert cli(["predict", str(flagged), *map(str, images), "--out", str(out), "--unknown-label"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert {r["predicted"] for r in rows} == {"unknown"} and {r["unknown"] for r in rows} == {"true"}


def test_api_predictions_carry_the_score_and_flag(run_dir, disease_root, tmp_path):
    import plantpheno as pp

    with pp.load_model(run_dir) as model:
        assert model.has_ood
        preds = model.predict(_images(disease_root))
    assert all(p.ood_score is not None and p.unknown in (True, False) and p.label != "unknown" for p in preds)

    flagged = tmp_path / "flagged"
    shutil.copytree(run_dir, flagged)
    _flag_everything(flagged)
    with pp.load_model(flagged) as model:
        preds = model.predict(_images(disease_root), unknown_label=True)
    assert all(p.unknown and p.label == "unknown" for p in preds)


def test_served_pyfunc_model_returns_ood_columns(run_dir, disease_root, tmp_path):
    import mlflow

    from plantpheno.registry.package import package_run
    from plantpheno.registry.pyfunc import save_pyfunc_model

    package = package_run(run_dir, tmp_path / "package")
    assert (package.folder / DETECTOR_FILE).is_file() and (package.folder / FEATURES_FILE).is_file()
    save_pyfunc_model(package, tmp_path / "pyfunc")
    frame = __import__("pandas").DataFrame({"image": [p.read_bytes() for p in _images(disease_root)]})
    out = mlflow.pyfunc.load_model(str(tmp_path / "pyfunc")).predict(frame)
    assert list(out.columns[-2:]) == ["ood_score", "unknown"] and len(out) == 3
    assert out["unknown"].isin([True, False]).all()
    labelled = mlflow.pyfunc.load_model(str(tmp_path / "pyfunc"), model_config={"unknown_label": True})
    assert len(labelled.predict(frame)) == 3


def test_a_package_without_a_detector_loads_and_says_so(run_dir, disease_root, tmp_path, capsys, caplog):
    import plantpheno as pp
    from plantpheno.registry.package import package_run

    package = package_run(run_dir, tmp_path / "old")
    for name in (DETECTOR_FILE, FEATURES_FILE):  # as packages registered before this were
        (package.folder / name).unlink()
        (package.folder / (name + ".sha256")).unlink()
    out = tmp_path / "preds.csv"
    assert cli(["predict", str(package.folder), str(_images(disease_root)[0]), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.count("has no OOD threshold") == 1 and "Traceback" not in err
    header = next(csv.reader(io.StringIO(out.read_text())))
    assert "ood_score" not in header and "unknown" not in header
    with caplog.at_level(logging.WARNING, logger="plantpheno"), pp.load_model(package.folder) as model:
        assert not model.has_ood
        pred = model.predict(_images(disease_root)[0])[0]
    assert pred.ood_score is None and pred.unknown is None
    assert any("has no OOD threshold" in r.message for r in caplog.records)


def test_evaluate_on_a_run_without_a_detector_says_so(run_dir, tmp_path, capsys):
    old = tmp_path / "old-run"
    shutil.copytree(run_dir, old)
    for name in (DETECTOR_FILE, FEATURES_FILE):
        (old / name).unlink()
    assert cli(["evaluate", str(old)]) == 0
    assert "has no OOD threshold" in capsys.readouterr().err
    assert not (old / "eval" / "test" / "unknown.json").exists()


@pytest.mark.parametrize("fine_tune", [False, True], ids=["head-only", "fine-tuned"])
def test_a_trait_model_gets_the_knn_score_from_the_feature_cache_pass(rosette_manifest, make_config, fine_tune):
    """Regression: knn whatever evaluation.ood.score says. With the feature cache the stored training features come
    from the cache (after a fine-tune phase: its cached activations through the fine-tuned blocks), in the split's
    order, and equal the final model's features from a fresh pass."""
    import numpy as np

    from plantpheno import pipeline
    from plantpheno.evaluation.ood import normalise
    from plantpheno.registry.package import ModelPackage, package_run
    from plantpheno.registry.predict import Predictor
    from plantpheno.reporting import RecordingReporter
    from plantpheno.run.folder import RunDir
    from plantpheno.training.features import extract_features

    training = {"epochs": 2, "feature_cache": True}
    if fine_tune:
        training["fine_tune"] = {"epochs": 1, "blocks": 1, "learning_rate": 1e-3}
    config = make_config(task="regression", data={"manifest": str(rosette_manifest)},
                         model={"backbone": "test_resnet", "freeze_backbone": True},
                         training=training, evaluation={"ood": {"score": "energy"}},
                         tracking={"system_metrics_interval": 0})
    reporter = RecordingReporter()
    run = RunDir(pipeline.train(config, reporter=reporter).run_dir)
    detector = OODDetector.load(run.path)
    assert detector.score == "knn" and detector.labels is None
    passes = [desc for desc, *_ in reporter.progress_calls]
    # the split evaluated gives its features in its prediction pass (evaluation.one_pass); train and val come from
    # the cache
    assert "predicting test" in passes and "OOD features (test)" not in passes
    assert "OOD features (train)" not in passes and "OOD features (val)" not in passes
    assert any("OOD detector fitted on train/val: knn" in line for _, line in reporter.lines)
    with run.split_manifest.open() as fh:
        train = [Path(r["path"]) for r in csv.DictReader(fh) if r["split"] == "train"]
    package: ModelPackage = package_run(run.path, run.path.parent / "pkg")
    predictor = Predictor(package)
    meta = package.meta
    fresh = extract_features(predictor.model, train, image_size=meta.image_size, mean=list(meta.mean),
                             std=list(meta.std), batch_size=8, device=predictor.device, num_workers=0).numpy()
    assert detector.bank.shape == fresh.shape
    np.testing.assert_allclose(detector.bank.astype(np.float32), normalise(fresh), atol=2e-3)
    rows = list(csv.DictReader(io.StringIO(predictor.to_csv(*_files_and_scores(predictor, train[:2])))))
    assert all("ood_score" in r and r["unknown"] in ("true", "false") for r in rows)


def _files_and_scores(predictor, paths):
    results, _, scores = predictor.predict_files_with_scores(paths)
    return results, scores


def test_the_report_has_the_unknown_and_risk_coverage_section(run_dir, tmp_path):
    from plantpheno.pipeline import report_run

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    html = report_run(copy).read_text(encoding="utf-8")
    assert 'id="unknown"' in html and "flagged unknown" in html
    assert "Risk-coverage curve" in html and "evaluation.selective.target_accuracy" in html


def test_served_model_refuses_an_unknown_label_that_is_not_a_boolean():
    from plantpheno.errors import ModelError
    from plantpheno.registry.pyfunc import ServingOptions

    assert ServingOptions.parse({"unknown_label": True}).unknown_label is True
    with pytest.raises(ModelError, match="model_config unknown_label: got 'yes'; expected true or false"):
        ServingOptions.parse({"unknown_label": "yes"})
