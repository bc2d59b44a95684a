"""A model of ``data.bands`` deployed (issue 31): its exports take its bands in the file's own units, carry their
names and scaling, pass their parity check and give what ``predict`` gives (registry/band_export.py); its OOD
detector is fitted on band features and flags band images unlike its training set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_config
from plantpheno.errors import ExportError

BANDS = ["red", "green", "blue", "nir", "ndvi"]


@pytest.fixture(scope="module")
def band_package(tmp_path_factory):
    """A tiny run on 16-bit four-band TIFFs (+ NDVI), packaged; and the data set."""
    from plantpheno import pipeline
    from plantpheno.config import validate_config
    from plantpheno.data.synth_bands import synthesize_multispectral
    from plantpheno.registry.package import package_run

    tmp = tmp_path_factory.mktemp("band-export")
    leaves = synthesize_multispectral(tmp / "set", per_class=8, image_size=32, seed=3)
    raw = tiny_config(tmp, data={"root": str(leaves), "bands": BANDS}, training={"epochs": 1})
    run = pipeline.train(validate_config(raw), handle_signals=False).run_dir
    return package_run(run, tmp / "package"), leaves


def test_torchscript_export_takes_the_bands_in_their_units_and_agrees_with_predict(band_package, tmp_path):
    from plantpheno.registry.band_export import export_input
    from plantpheno.registry.export import PREPROCESSING_FILE, export_package
    from plantpheno.registry.predict import Predictor

    package, leaves = band_package
    samples = package.sample_inputs()  # the stored test images as the export takes them: 5 bands, 16-bit units
    assert samples is not None and samples.shape[1:] == (5, 32, 32) and float(samples[:, :4].max()) > 255
    out = tmp_path / "model.pt"
    report = export_package(package, "torchscript", out)
    assert report.num_images == len(samples) + 4 and report.max_abs_diff <= 1e-4  # + 4 random: the OOD check

    extra = {PREPROCESSING_FILE: ""}
    loaded = torch.jit.load(str(out), _extra_files=extra)
    notes = json.loads(extra[PREPROCESSING_FILE])
    m = package.meta.bands
    assert notes["bands"]["names"] == BANDS and notes["bands"]["mean"] == list(m.mean)
    assert notes["bands"]["low"] == list(m.low) and "own units" in notes["input"]

    files = sorted(leaves.rglob("*.tif"))[:6]
    predictor = Predictor(package)
    predicted, bad, scores = predictor.predict_files_with_scores(files)
    assert not bad
    with torch.no_grad():  # a band model's detector goes into the graph as an RGB model's does (ood_export.py)
        exported, score, unknown = loaded(torch.stack([export_input(package.meta, f) for f in files]))
    want = torch.stack([p for _, p in predicted])
    assert exported.argmax(1).tolist() == want.argmax(1).tolist()
    assert torch.allclose(exported, want, atol=1e-5)
    np.testing.assert_allclose(score.numpy(), scores, rtol=1e-4, atol=1e-4)
    assert unknown.tolist() == predictor.ood.unknown(np.array(scores)).tolist()
    assert report.ood.startswith("outputs ood_score and unknown: energy+knn")


@pytest.mark.parametrize("broken", ["score", "flag"])
def test_an_ood_output_unlike_ood_py_fails_the_parity_check(band_package, tmp_path, monkeypatch, broken):
    """The check holds the graph's ood_score and unknown to ood.py's own numbers (not to the graph's eager self):
    a score off by 1, or every image flagged, is caught and nothing is written."""
    from plantpheno.registry import ood_export
    from plantpheno.registry.export import export_package

    real = ood_export.OODScore.forward

    def wrong(self, logits, features):
        score, flag = real(self, logits, features)
        return (score + 1, flag) if broken == "score" else (score, torch.ones_like(flag))

    monkeypatch.setattr(ood_export.OODScore, "forward", wrong)
    what = "ood_score differs by" if broken == "score" else "unknown differs on"
    with pytest.raises(ExportError, match=f"parity check failed: torchscript export .*: {what}"):
        export_package(band_package[0], "torchscript", tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists()


def test_a_broken_band_normalisation_fails_the_parity_check(band_package, tmp_path):
    from plantpheno.registry.export import export_package

    package, _ = band_package
    wrong = [v * 1.5 for v in package.meta.bands.mean]  # a graph that scales the bands wrongly
    with pytest.raises(ExportError, match="parity check failed"):
        export_package(package, "torchscript", tmp_path / "m.pt", mean=wrong)
    assert not (tmp_path / "m.pt").exists()


def test_without_stored_samples_the_check_runs_on_values_within_each_band_range(band_package, tmp_path):
    import shutil

    from plantpheno.registry.export import _check_images
    from plantpheno.registry.package import SAMPLES_FILE, ModelPackage

    folder = shutil.copytree(band_package[0].folder, tmp_path / "package")
    (folder / SAMPLES_FILE).unlink()
    package = ModelPackage.open(folder)
    images = _check_images(package)
    m = package.meta.bands
    assert images.shape == (4, 5, 32, 32)
    low, high = np.array(m.low).reshape(1, -1, 1, 1), np.array(m.high).reshape(1, -1, 1, 1)
    assert (images.numpy() >= low - 1e-3).all() and (images.numpy() <= high + 1e-3).all()


def test_an_rgb_package_still_takes_rgb_in_zero_one():
    """The preprocessing an RGB export records is unchanged (the old-layout package of tests/data/)."""
    from plantpheno.registry.package import ModelPackage, preprocessing

    package = ModelPackage.open(Path(__file__).resolve().parents[1] / "data" / "old_layout" / "package")
    notes = preprocessing(package.meta)
    assert "bands" not in notes and notes["input"].startswith("RGB in [0, 1], N x 3")


def test_the_ood_detector_is_fitted_on_band_features_and_predict_scores_as_training_did(band_package):
    """The detector's feature pass (training/unknowns.py) and predict read the bands alike: predict's OOD scores of
    the test images are those the evaluation wrote; a band image far from the training set is flagged."""
    import csv

    from plantpheno.registry.predict import Predictor

    package, _ = band_package
    run = Path(package.meta.source_run_dir)
    block = json.loads((run / "eval" / "test" / "unknown.json").read_text())
    assert (package.folder / "ood.json").is_file() and block["num_images"] > 0
    with (run / "split.csv").open(newline="") as fh:
        test = [Path(r["path"]) for r in csv.DictReader(fh) if r["split"] == "test"]
    predictor = Predictor(package)
    assert predictor.ood is not None and predictor.ood.score == "energy+knn"
    _, bad, scores = predictor.predict_files_with_scores(test)
    assert not bad and len(scores) == block["num_images"]
    quantiles = {f"q{int(q * 100):02d}": float(np.quantile(scores, q)) for q in (0.05, 0.25, 0.5, 0.75, 0.95)}
    assert quantiles == pytest.approx(block["score_quantiles"], abs=1e-4)
    noise = np.random.default_rng(0).integers(0, 65535, (32, 32, 4)).astype(np.uint16)  # no leaf at all
    results, _, by_index = predictor.predict_with_scores([noise])
    score = by_index[0]
    described = predictor.describe(results[0][1], score)
    assert described["unknown"] is True and score > predictor.ood.threshold


def test_the_served_model_answers_a_band_list_it_does_not_match_with_a_bad_request(band_package):
    """The pyfunc turns the one message into MLflow's INVALID_PARAMETER_VALUE (HTTP 400 from `mlflow models serve`,
    tested there in tests/integration/test_bands_round_trip.py), not an unexpected error with a stack trace."""
    import io

    import pandas as pd
    import tifffile
    from mlflow.exceptions import MlflowException

    from plantpheno.registry.predict import Predictor
    from plantpheno.registry.pyfunc import PlantPhenoPyfunc, ServingOptions

    served = PlantPhenoPyfunc()
    served.options, served.predictor = ServingOptions(), Predictor(band_package[0])
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.zeros((32, 32, 3), np.uint16), photometric="minisblack", planarconfig="contig")
    with pytest.raises(MlflowException, match=r"has 3 band\(s\); data.bands needs nir .*trained on bands") as caught:
        served.predict(None, pd.DataFrame({"image": [buf.getvalue()]}))
    assert caught.value.get_http_status_code() == 400


def test_an_rgb_model_says_that_a_band_file_it_cannot_read_holds_other_bands(tmp_path):
    """An RGB package (made before bands) lists a four-band 16-bit TIFF as unreadable, as before, saying why."""
    import tifffile

    from plantpheno.registry.package import ModelPackage
    from plantpheno.registry.predict import Predictor

    band_file = tmp_path / "four.tif"
    tifffile.imwrite(band_file, np.zeros((32, 32, 4), np.uint16), photometric="minisblack", planarconfig="contig")
    predictor = Predictor(ModelPackage.open(Path(__file__).resolve().parents[1] / "data" / "old_layout" / "package"))
    results, bad = predictor.predict_images([band_file, band_file.read_bytes(), b"not an image"])
    assert not results and [i for i, _ in bad] == [0, 1, 2]
    assert all("holds 4 band(s) of uint16; this model reads RGB images" in why for _, why in bad[:2])
    assert "band" not in bad[2][1]


def test_the_package_keeps_the_band_importance_with_its_checksum_and_the_api_reads_it(band_package, tmp_path):
    import shutil

    from plantpheno import load_model
    from plantpheno.errors import PlantPhenoError

    package, _ = band_package
    run = Path(package.meta.source_run_dir)
    copied = package.folder / "band_importance.json"
    assert copied.read_text() == (run / "band_importance.json").read_text()
    assert (package.folder / "band_importance.json.sha256").is_file()
    record = load_model(package.folder).band_importance
    assert record is not None and sorted(r["band"] for r in record["bands"]) == sorted(BANDS)
    assert load_model(Path(__file__).resolve().parents[1] / "data" / "old_layout" / "package").band_importance is None
    damaged = shutil.copytree(package.folder, tmp_path / "damaged")
    (damaged / "band_importance.json").write_text(copied.read_text().replace('"val"', '"test"'))
    with pytest.raises(PlantPhenoError, match="band_importance.json"):
        load_model(damaged).band_importance
