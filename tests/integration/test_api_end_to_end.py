"""The Python API end to end, and registered versions as MLflow pyfunc models: loaded by ``models:/`` URI and served
by a real ``mlflow models serve`` process over HTTP. Real MLflow (sqlite), real training on tiny synthetic data."""

from __future__ import annotations

import base64
import csv
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import plantpheno as pp
from conftest import mlflow_served, post_json
from plantpheno.errors import DataError, RegistryError, RunDirError

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory, disease_root):
    """A tiny classification run trained through the API, registered as leafnet@champion in its own registry."""
    from conftest import tiny_config

    tmp = tmp_path_factory.mktemp("api")
    raw = tiny_config(tmp, tracking={"system_metrics_interval": 0})
    run = pp.train(raw, data_path=disease_root, verbose=False)
    uri = f"sqlite:///{(tmp / 'registry.db').resolve()}"
    # force: a tiny run does not clearly beat its baseline on 10 test images (the gate: test_registry.py)
    version = pp.register_model(run, "leafnet", alias="champion", registry=uri, force=True)
    return run, uri, version


def _expected(run: pp.Run) -> dict[str, dict[str, str]]:
    with (run.path / "eval" / "test" / "predictions.csv").open(newline="") as fh:
        return {row["path"]: row for row in csv.DictReader(fh)}


def _assert_same(prediction: pp.Prediction, row: dict[str, str]) -> None:
    assert prediction.label == row["predicted"]
    assert prediction.confidence == pytest.approx(float(row["confidence"]), abs=2e-6)
    for name, p in prediction.probabilities.items():
        assert p == pytest.approx(float(row[f"p_{name}"]), abs=2e-6)


def test_train_evaluate_and_read_metrics(classifier):
    run, _, _ = classifier
    assert isinstance(run, pp.Run) and run.status == "completed"
    assert run.metrics() == json.loads((run.path / "eval/test/metrics.json").read_text())
    assert run.metrics()["headline_metric"] == "accuracy" and run.metrics()["confidence_interval"]["low"] is not None
    assert [row["epoch"] for row in run.history] == [1, 2] and "val/accuracy" in run.history[-1]
    assert run.config.model.backbone == "test_resnet" and run.best_checkpoint.name == "best.pt"
    val = pp.evaluate(run, split="val", verbose=False)
    assert val["split"] == "val" and run.metrics("val") == val
    assert pp.open_run(os.fspath(run)) == run
    with pytest.raises(RunDirError, match=r"no evaluation on the train split .* split='train'"):
        run.metrics("train")
    with pytest.raises(RunDirError, match="is not a plantpheno run directory"):
        pp.open_run(run.path.parent)


def test_load_by_every_reference_and_predict_as_evaluation_did(classifier, tmp_path):
    run, uri, version = classifier
    expected = _expected(run)
    paths = list(expected)
    registry = pp.Registry(uri)
    assert version.version == 1 and registry.get("leafnet@champion").version == 1
    assert registry.register_model(run, "leafnet", force=True).version == 2
    assert [v.version for v in registry.versions("leafnet")] == [1, 2]
    assert registry.promote("leafnet", 2, "champion", force=True).version == 2

    from plantpheno.registry.refs import parse_ref
    from plantpheno.registry.store import ModelRegistry

    package = ModelRegistry(uri).download(parse_ref("leafnet/1"), tmp_path / "download")
    mlflow_model = package.folder.parent.parent  # the registered version is an MLflow model holding the package
    assert (mlflow_model / "MLmodel").is_file()
    for ref in ("leafnet", "leafnet/1", "leafnet@champion", run, str(run.path), package.folder, mlflow_model):
        with pp.load_model(ref, registry=uri) as model:
            assert model.task == "classification" and model.class_names == run.metrics()["class_names"]
            predictions = model.predict(paths)
            assert [p.source for p in predictions] == paths
            for prediction in predictions:
                _assert_same(prediction, expected[prediction.source])
    with pytest.raises(RegistryError, match="no registered model named 'nope'"):
        pp.load_model("nope", registry=uri)


def test_predict_takes_pil_images_arrays_bytes_and_folders(classifier, tmp_path):
    run, _, _ = classifier
    expected = _expected(run)
    path = next(iter(expected))
    model = run.load_model()
    pil = Image.open(path)
    array = np.asarray(pil.convert("RGB"))
    one = model.predict(pil)
    assert len(one) == 1 and one[0].source is None
    _assert_same(one[0], expected[path])
    stacked = model.predict(np.stack([array, array]))  # (N, H, W, C): N images
    assert len(stacked) == 2
    for prediction in [*stacked, *model.predict([array, array.astype(np.float32) / 255, Path(path).read_bytes()])]:
        _assert_same(prediction, expected[path])
    grey = model.predict(np.asarray(pil.convert("L")))[0]
    assert grey.label in model.class_names and sum(grey.probabilities.values()) == pytest.approx(1, abs=1e-5)

    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "leaf.jpg").write_bytes(Path(path).read_bytes())
    (folder / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"1 of 2 image\(s\) could not be read: .*broken.jpg"):
        model.predict(folder)
    skipped = model.predict([folder, np.zeros((2, 2, 7))], on_bad_image="skip")
    assert [p.source for p in skipped] == [str(folder / "broken.jpg"), str(folder / "leaf.jpg"), None]
    assert "UnidentifiedImageError" in skipped[0].error and skipped[1].error is None
    assert "expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)" in skipped[2].error
    _assert_same(skipped[1], expected[path])


def test_trait_model_predicts_values_and_train_prints_by_default(rosette_manifest, tmp_path, capsys):
    from conftest import tiny_config

    raw = tiny_config(tmp_path, task="regression", tracking={"system_metrics_interval": 0})
    trainer = pp.Trainer(raw, ["training.epochs=1"], data_path=rosette_manifest, output_path=tmp_path / "out")
    assert trainer.config.data.manifest == rosette_manifest and trainer.config.data.root is None
    run = trainer.fit()
    err = capsys.readouterr().err
    assert "epoch 1/1" in err  # the default: what `plantpheno train` shows
    assert run.path.parent.parent == tmp_path / "out"
    with (run.path / "eval/test/predictions.csv").open(newline="") as fh:
        expected = {row["path"]: float(row["predicted"]) for row in csv.DictReader(fh)}
    model = pp.load_model(run)
    assert model.task == "regression" and model.class_names is None
    for prediction in model.predict(list(expected)):
        assert prediction.label is None and prediction.probabilities is None
        assert prediction.value == prediction.predicted == pytest.approx(expected[prediction.source], abs=1e-4)
    pp.evaluate(run, split="val", verbose=False)
    assert capsys.readouterr().err == ""


# ----------------------------------------------------------------------------------------------
# MLflow pyfunc
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def mlflow_env(classifier, monkeypatch):
    _, uri, _ = classifier
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return uri


def test_registered_version_is_an_mlflow_pyfunc_model(classifier, mlflow_env, tmp_path, disease_root):
    import mlflow
    import pandas as pd
    from mlflow.exceptions import MlflowException

    run, _, _ = classifier
    expected = _expected(run)
    paths = list(expected)
    # 'path' inputs are read only inside the folder the model is loaded (served) with
    model = mlflow.pyfunc.load_model("models:/leafnet@champion", model_config={"allowed_image_dir": str(disease_root)})
    inputs = model.metadata.signature.inputs.to_dict()
    assert {c["name"]: c["type"] for c in inputs} == {"image": "binary", "path": "string"}
    names = run.metrics()["class_names"]
    assert model.metadata.signature.outputs.input_names() == ["predicted", "confidence", *(f"p_{n}" for n in names),
                                                              "ood_score", "unknown"]

    for frame in (pd.DataFrame({"image": [Path(p).read_bytes() for p in paths]}), pd.DataFrame({"path": paths})):
        out = model.predict(frame)
        assert list(out["predicted"]) == [expected[p]["predicted"] for p in paths]
        for n in names:
            assert np.allclose(out[f"p_{n}"], [float(expected[p][f"p_{n}"]) for p in paths], atol=2e-6)
    with pytest.raises(MlflowException, match=r"1 of 2 image\(s\) could not be read: row 1: UnidentifiedImageError"):
        model.predict(pd.DataFrame({"image": [Path(paths[0]).read_bytes(), b"not an image"]}))

    # self-contained and unpickled: safetensors weights, the entry point as code, pinned requirements
    folder = Path(mlflow.artifacts.download_artifacts("models:/leafnet@champion", dst_path=str(tmp_path)))
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in (".pkl", ".pickle", ".pt", ".pth", ".bin")]
    assert (folder / "plantpheno_pyfunc.py").is_file() and (folder / "artifacts/package/model.safetensors").is_file()
    import yaml

    flavor = yaml.safe_load((folder / "MLmodel").read_text())["flavors"]["python_function"]
    assert flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model" and "python_model" not in flavor
    pins = (folder / "requirements.txt").read_text().split()
    import torch

    assert f"torch=={torch.__version__.split('+')[0]}" in pins and f"mlflow=={mlflow.__version__}" in pins
    assert any(p.startswith("plantpheno==") for p in pins)
    example = json.loads((folder / "serving_input_example.json").read_text())
    served = model.predict(pd.DataFrame({"image": [base64.b64decode(example["dataframe_split"]["data"][0][0])]}))
    assert served["predicted"][0] in names




def test_mlflow_models_serve_answers_invocations(classifier, mlflow_env, tmp_path, disease_root):
    """`mlflow models serve -m models:/leafnet@champion --env-manager local` as a deployment runs it (allowed to
    read images from the dataset's folder: SERVING_MODEL_CONFIG)."""
    run, _, _ = classifier
    expected = _expected(run)
    paths = list(expected)[:4]
    env = {"SERVING_MODEL_CONFIG": json.dumps({"allowed_image_dir": str(disease_root)})}
    with mlflow_served("models:/leafnet@champion", tmp_path / "serve.log", env=env) as base:
        images = [base64.b64encode(Path(p).read_bytes()).decode("ascii") for p in paths]
        status, body = post_json(f"{base}/invocations", {"dataframe_records": [{"image": b} for b in images]})
        assert status == 200, body
        for path, row in zip(paths, body["predictions"]):
            assert row["predicted"] == expected[path]["predicted"]
            assert row["confidence"] == pytest.approx(float(expected[path]["confidence"]), abs=2e-6)
        status, body = post_json(f"{base}/invocations",
                                 {"dataframe_split": {"columns": ["path"], "data": [[paths[0]]]}})
        assert status == 200 and body["predictions"][0]["predicted"] == expected[paths[0]]["predicted"]
        status, body = post_json(f"{base}/invocations", {"inputs": {"image": images[:2]}})
        assert status == 200 and [r["predicted"] for r in body["predictions"]] == [
            expected[p]["predicted"] for p in paths[:2]]
        status, body = post_json(f"{base}/invocations",
                             {"dataframe_records": [{"image": base64.b64encode(b"garbage").decode()}]})
        assert status == 400 and "could not be read: row 0" in body["message"]
    deadline = time.monotonic() + 30  # its worker processes may take a moment to let go of the port
    while True:
        try:
            urllib.request.urlopen(f"{base}/ping", timeout=5)
        except OSError:
            break
        assert time.monotonic() < deadline, "the model server still answers 30 s after it was stopped"
        time.sleep(0.5)


def test_readme_example_script_trains_evaluates_registers_and_predicts(tmp_path):
    """On the `make demo` data the example's model beats its trivial baseline on test, so registering it needs no
    force (the registry refuses a model at chance without it)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR",
                                                             "MLFLOW_LOGGING_LEVEL")}
    result = subprocess.run([sys.executable, str(REPO / "examples" / "python_api.py"), "--workdir", str(tmp_path)],
                            capture_output=True, text=True, timeout=900, check=False,
                            env={**env, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout.splitlines()
    assert out[0].startswith("test accuracy ") and "95% CI" in out[0] and out[0].endswith(" epochs")
    assert out[1].startswith("val accuracy ")
    assert [line.split()[0] for line in out[2:]] == [f".demo/leaves/rust/rust_{i:04d}.jpg" for i in range(3)]
    from plantpheno.registry.store import ModelRegistry

    registry = ModelRegistry(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    [version] = registry.versions("leafnet")
    assert (version.version, version.aliases, version.tags["test_vs_baseline"]) == (1, ("candidate",), "better")
    assert "Created version" not in result.stderr and "%|" not in result.stderr  # MLflow's lines stay out


def test_api_tracks_to_mlflow_by_default_beside_the_registry_and_prints_no_third_party_lines(
        disease_root, tmp_path, monkeypatch, capfd):
    """Tracking on by default: the run and the registered model share the project's runs/mlflow.db, and MLflow's
    INFO lines ("Created version ...") and artifact progress bars stay out of the API's output."""
    from mlflow import MlflowClient

    from conftest import tiny_config

    monkeypatch.chdir(tmp_path)  # the project folder: output_dir runs, so its runs/mlflow.db is the registry too
    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)
    monkeypatch.delenv("MLFLOW_LOGGING_LEVEL", raising=False)
    raw = tiny_config(tmp_path, output_dir="runs", training={"epochs": 1}, evaluation={"report": False})
    del raw["tracking"]  # the default, as a user's config has it
    capfd.readouterr()
    run = pp.train(raw, data_path=disease_root, verbose=False)
    pp.register_model(run, "quiet", alias="candidate", force=True)
    pp.load_model("quiet@candidate").predict(disease_root / "rust")
    out, err = capfd.readouterr()
    for noise in ("INFO", "mlflow", "alembic", "%|", "Uploading", "Downloading", "Created version",
                  "Successfully registered"):
        assert noise not in out + err, (noise, out[-2000:], err[-2000:])
    uri = f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    tracked = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])
               if r.info.run_name == run.path.name]
    assert len(tracked) == 1 and "test/accuracy" in tracked[0].data.metrics
    assert [m.name for m in client.search_registered_models()] == ["quiet"]
