"""A one-file-per-band model over HTTP (issue 31): RGB TIFFs with a NIR TIFF beside each (`data synth --kind
multispectral --layout per-band`) -> train -> register (MLflow on sqlite) -> a real `mlflow models serve`. The band
file in its own column (base64), by `nir_path` inside allowed_image_dir, and found by its pattern next to `path` all
give what `plantpheno predict` gives; a request without the band is HTTP 400 naming it; a `nir_path` outside
allowed_image_dir (or a band file that links out of it) is refused."""

from __future__ import annotations

import base64
import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import mlflow_served, post_json, tiny_config

pytestmark = pytest.mark.slow
BANDS = ["red", "green", "blue", {"name": "nir", "pattern": "{stem}_NIR.tif"}]
TOL = 2e-6  # the CLI's CSV holds 6 decimals


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def _nir(image: Path) -> Path:
    return image.with_name(f"{image.stem}_NIR.tif")


def _same(got: dict, want: dict[str, str], classes: list[str]) -> None:
    assert got["predicted"] == want["predicted"]
    for name in classes:
        assert float(got[f"p_{name}"]) == pytest.approx(float(want[f"p_{name}"]), abs=TOL)


def test_a_per_band_file_model_served_over_http_answers_as_predict_does(tmp_path):
    import plantpheno as pp
    from plantpheno.data.synth_bands import synthesize_multispectral

    leaves = synthesize_multispectral(tmp_path / "set", per_class=8, image_size=32, seed=6, layout="per-band")
    run = pp.train(tiny_config(tmp_path, data={"root": str(leaves), "bands": BANDS}, training={"epochs": 1}),
                   verbose=False)
    classes = run.metrics()["class_names"]
    uri = f"sqlite:///{(tmp_path / 'registry.db').resolve()}"
    pp.register_model(run, "bandfiles", alias="champion", registry=uri, force=True)
    images = [leaves / "healthy" / "healthy_0000.tif", leaves / "healthy" / "healthy_0001.tif",
              leaves / "stressed" / "stressed_0000.tif", leaves / "stressed" / "stressed_0001.tif"]
    done = subprocess.run([sys.executable, "-m", "plantpheno", "predict", "bandfiles@champion",
                           *map(str, images), "--registry", uri], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    expected = {row["path"]: row for row in csv.DictReader(io.StringIO(done.stdout))}
    want = [expected[str(p)] for p in images]

    outside = tmp_path / "outside"  # a NIR file outside allowed_image_dir, and a link to it from inside
    outside.mkdir()
    (outside / "secret_NIR.tif").write_bytes(_nir(images[0]).read_bytes())
    linked = leaves / "healthy" / "linked.tif"
    linked.write_bytes(images[0].read_bytes())
    _nir(linked).symlink_to(outside / "secret_NIR.tif")
    env = {"MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri,
           "SERVING_MODEL_CONFIG": json.dumps({"allowed_image_dir": str(leaves)})}
    with mlflow_served("models:/bandfiles@champion", tmp_path / "serve.log", env=env) as base:
        _band_columns_answer_as_predict(f"{base}/invocations", images, leaves, want, classes)
        _bad_band_requests_are_refused(f"{base}/invocations", images, leaves, linked, outside)


def _band_columns_answer_as_predict(url: str, images: list[Path], leaves: Path, want: list[dict],
                                    classes: list[str]) -> None:
    """The NIR file as base64 in 'nir', by 'nir_path', and by its pattern next to 'path': predict's answers."""
    by_bytes = [{"image": _b64(p), "nir": _b64(_nir(p))} for p in images]
    by_path = [{"path": str(p.relative_to(leaves)), "nir_path": str(_nir(p).relative_to(leaves))} for p in images]
    by_pattern = [{"path": str(p)} for p in images]  # absolute, inside the folder: NIR found beside it
    for records in (by_bytes, by_path, by_pattern):
        status, body = post_json(url, {"dataframe_records": records})
        assert status == 200, body
        assert len(body["predictions"]) == len(images)
        for row, expected in zip(body["predictions"], want):
            _same(row, expected, classes)
            assert isinstance(row["unknown"], bool) and isinstance(row["ood_score"], float)
    status, body = post_json(url, {"dataframe_split": {"columns": ["image", "nir"],  # another request format
                                                       "data": [[r["image"], r["nir"]] for r in by_bytes]}})
    assert status == 200 and [r["predicted"] for r in body["predictions"]] == [w["predicted"] for w in want], body


def _bad_band_requests_are_refused(url: str, images: list[Path], leaves: Path, linked: Path, outside: Path) -> None:
    """No NIR column: 400 naming the band and its columns. A nir_path outside the folder, by '..', absolute, or a
    pattern file that links out of it: 400, one refusal that does not say whether the file exists."""
    status, body = post_json(url, {"dataframe_records": [{"image": _b64(images[0])}]})
    assert status == 400, body
    assert "band 'nir': a column 'nir' (the band file's bytes; base64 in JSON) or 'nir_path'" in body["message"]
    assert "stack_trace" not in body and "Traceback" not in body["message"]
    refusals = set()
    for nir_path in ("../outside/secret_NIR.tif", str(outside / "secret_NIR.tif"), "/etc/passwd"):
        record = {"image": _b64(images[0]), "nir_path": nir_path}
        status, body = post_json(url, {"dataframe_records": [record]})
        assert status == 400, body
        message = body["message"]
        assert "row 0: path" in message and "no readable image file of that name inside the folder" in message
        refusals.add(message[message.index("no readable"):])
    assert len(refusals) == 1  # the same words whether the file outside exists or not
    status, body = post_json(url, {"dataframe_records": [{"path": str(linked.relative_to(leaves))}]})
    assert status == 400 and "no readable image file of that name inside the folder" in body["message"], body
