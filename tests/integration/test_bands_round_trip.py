"""Issue 31's round trip: 16-bit four-band TIFFs -> train -> evaluate -> register (MLflow on sqlite) -> `plantpheno
predict` -> `mlflow models serve` -> ONNX export, with the same predictions everywhere; a band list the model does not
match is one message (exit 2 / HTTP 400); and an RGB package made before bands still predicts as it did."""

from __future__ import annotations

import base64
import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from plantpheno.errors import DataError
from conftest import mlflow_served, post_json, tiny_config

pytestmark = pytest.mark.slow
BANDS = ["red", "green", "blue", "nir"]
OLD = Path(__file__).resolve().parents[1] / "data" / "old_layout"
TOL = 2e-6  # predictions.csv holds 6 decimals


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "plantpheno", *args], capture_output=True, text=True, timeout=600,
                          env=env)


def _rows(text: str) -> dict[str, dict[str, str]]:
    return {row["path"]: row for row in csv.DictReader(io.StringIO(text))}


def _same(got: dict, want: dict[str, str], classes: list[str], tol: float = TOL) -> None:
    assert got["predicted"] == want["predicted"]
    for name in classes:
        assert float(got[f"p_{name}"]) == pytest.approx(float(want[f"p_{name}"]), abs=tol)


def _three_band_tiff() -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.zeros((32, 32, 3), np.uint16), photometric="minisblack", planarconfig="contig")
    return buf.getvalue()


def test_a_sixteen_bit_four_band_model_round_trips_with_the_same_predictions(tmp_path):
    import plantpheno as pp
    from plantpheno.data.synth_bands import synthesize_multispectral

    leaves = synthesize_multispectral(tmp_path / "set", per_class=16, image_size=32, seed=5)
    assert tifffile.imread(next(leaves.rglob("*.tif"))).dtype == np.uint16
    run = pp.train(tiny_config(tmp_path, data={"root": str(leaves), "bands": BANDS}, training={"epochs": 3}),
                   verbose=False)
    assert (run.path / "ood.json").is_file()  # the OOD detector is fitted on band features
    pp.evaluate(run, split="test", verbose=False)
    assert json.loads((run.path / "eval" / "test" / "unknown.json").read_text())["num_images"] > 0
    with (run.path / "eval" / "test" / "predictions.csv").open(newline="") as fh:
        expected = {row["path"]: row for row in csv.DictReader(fh)}
    classes = run.metrics()["class_names"]
    files = sorted(expected)[:6]
    uri = f"sqlite:///{(tmp_path / 'registry.db').resolve()}"
    version = pp.register_model(run, "bandnet", alias="champion", registry=uri, force=True)
    ref = f"bandnet/{version.version}"

    done = _cli("predict", ref, *files, "--registry", uri)  # the CLI, from the registry
    assert done.returncode == 0, done.stderr
    predicted = _rows(done.stdout)
    for path in files:
        _same(predicted[path], expected[path], classes)
        assert predicted[path]["unknown"] in ("true", "false") and predicted[path]["ood_score"]
    three = tmp_path / "rgb.tif"
    three.write_bytes(_three_band_tiff())
    done = _cli("predict", ref, str(three), "--registry", uri)  # a band list the model does not match: exit 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("plantpheno: error:")]
    assert done.returncode == 2 and "Traceback" not in done.stderr and len(errors) == 1, done.stderr
    assert "has 3 band(s); data.bands needs nir" in done.stderr and "trained on bands red, green, blue, nir" in \
        done.stderr
    with pp.load_model(ref, registry=uri) as model:  # the API: the same answers, with OOD scores; one DataError
        for prediction, path in zip(model.predict(files), files):
            assert prediction.label == expected[path]["predicted"] and prediction.unknown in (True, False)
            assert prediction.ood_score == pytest.approx(float(predicted[path]["ood_score"]), abs=TOL)
        with pytest.raises(DataError, match=r"has 3 band\(s\).*trained on bands red, green, blue, nir"):
            model.predict([three])

    _served_predictions_agree(uri, files, expected, classes, tmp_path)
    _onnx_export_agrees(ref, uri, files, expected, classes, tmp_path)
    _rgb_package_made_before_bands_predicts_as_it_did(tmp_path)


def _served_predictions_agree(uri: str, files: list[str], expected: dict, classes: list[str], tmp_path: Path) -> None:
    """`mlflow models serve` of the registered version: band TIFF bytes in, the same predictions out; a three-band
    TIFF gets HTTP 400 with the message, not a stack trace."""
    env = {"MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri}
    with mlflow_served("models:/bandnet@champion", tmp_path / "serve.log", env=env) as base:
        images = [base64.b64encode(Path(p).read_bytes()).decode("ascii") for p in files]
        status, body = post_json(f"{base}/invocations", {"dataframe_records": [{"image": b} for b in images]})
        assert status == 200, body
        for path, row in zip(files, body["predictions"]):
            _same(row, expected[path], classes)
            assert isinstance(row["unknown"], bool) and isinstance(row["ood_score"], float)
        bad = base64.b64encode(_three_band_tiff()).decode("ascii")
        status, body = post_json(f"{base}/invocations", {"dataframe_records": [{"image": bad}]})
        assert status == 400, body
        assert "has 3 band(s); data.bands needs nir" in body["message"] and "trained on bands" in body["message"]
        assert "stack_trace" not in body and "Traceback" not in body["message"]


def _onnx_export_agrees(ref: str, uri: str, files: list[str], expected: dict, classes: list[str],
                        tmp_path: Path) -> None:
    """`plantpheno models export --format onnx`: input (N, 4, S, S), band names and scaling in the metadata, the
    same probabilities from the bands in their own units (registry/band_export.py)."""
    import onnx
    import onnxruntime as ort

    from plantpheno.registry.band_export import export_input
    from plantpheno.registry.export import PREPROCESSING_KEY
    from contextlib import ExitStack

    from plantpheno.registry.model_source import open_model

    out = tmp_path / "bandnet.onnx"
    done = _cli("models", "export", ref, str(out), "--format", "onnx", "--registry", uri)
    assert done.returncode == 0, done.stderr
    graph = onnx.load(str(out))
    shape = [d.dim_value or d.dim_param for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert shape[1:] == [4, 32, 32]
    notes = json.loads({p.key: p.value for p in graph.metadata_props}[PREPROCESSING_KEY])
    assert notes["bands"]["names"] == BANDS and len(notes["bands"]["std"]) == 4
    with ExitStack() as stack:  # the registered version's package, as `predict` opens it
        meta = open_model(ref, stack, registry_uri=uri).meta
        inputs = np.stack([export_input(meta, p).numpy() for p in files])
    probabilities = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"images": inputs})[0]
    for path, probs in zip(files, probabilities):
        _same({"predicted": classes[int(probs.argmax())], **{f"p_{c}": p for c, p in zip(classes, probs)}},
              expected[path], classes, tol=1e-5)


def _rgb_package_made_before_bands_predicts_as_it_did(tmp_path: Path) -> None:
    """The old-layout RGB package (tests/data/old_layout/) through `plantpheno predict` and a TorchScript export."""
    folder = shutil.copytree(OLD / "package", tmp_path / "old-package")
    images = sorted(str(p) for p in (OLD / "images").iterdir())
    done = _cli("predict", str(folder), *images)
    assert done.returncode == 0, done.stderr
    rows = _rows(done.stdout)
    recorded = json.loads((OLD / "expected.json").read_text(encoding="utf-8"))["package"]
    for image, want in zip(images, recorded):
        assert Path(image).name == want["image"] and rows[image]["predicted"] == want["label"]
        for name, p in want["probabilities"].items():
            assert float(rows[image][f"p_{name}"]) == pytest.approx(p, abs=TOL)
    done = _cli("models", "export", str(folder), str(tmp_path / "old.pt"), "--format", "torchscript")
    assert done.returncode == 0, done.stderr
