"""The served MLflow model of a one-file-per-band model (issue 31, registry/pyfunc_bands.py): a column per band
file beside ``image`` (bytes, base64 or ``<band>_path``), in the signature and input example; a request without a
band's column is a 400 naming the band."""

from __future__ import annotations

import base64
import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import tiny_config

BANDS = ["red", "green", "blue", {"name": "nir", "column": "nir_path"}]


@pytest.fixture(scope="module")
def column_package(tmp_path_factory):
    """A tiny run on the per-band layout (red, green, blue in one TIFF, NIR in its own, named by a manifest column),
    packaged; and its test images as (image, nir) paths."""
    from plantpheno import pipeline
    from plantpheno.config import validate_config
    from plantpheno.data.synth_bands import synthesize_multispectral
    from plantpheno.registry.package import package_run

    tmp = tmp_path_factory.mktemp("band-serving")
    leaves = synthesize_multispectral(tmp / "set", per_class=6, image_size=32, seed=3, layout="per-band")
    raw = tiny_config(tmp, data={"manifest": str(leaves / "labels.csv"), "bands": BANDS}, training={"epochs": 1})
    run = pipeline.train(validate_config(raw), handle_signals=False).run_dir
    with (run / "split.csv").open(newline="") as fh:
        test = [(Path(r["path"]), Path(r["nir_path"])) for r in csv.DictReader(fh) if r["split"] == "test"]
    return package_run(run, tmp / "package"), leaves, test


def _served(package, **options):
    from plantpheno.registry.predict import Predictor
    from plantpheno.registry.pyfunc import PlantPhenoPyfunc, ServingOptions

    served = PlantPhenoPyfunc()
    served.options, served.predictor = ServingOptions.parse(options), Predictor(package)
    return served


def test_the_band_files_in_their_columns_give_what_the_api_gives(column_package):
    from plantpheno.registry.predict import Predictor

    package, _, test = column_package
    frame = pd.DataFrame({"image": [i.read_bytes() for i, _ in test],
                          "nir": [base64.b64encode(n.read_bytes()).decode() for _, n in test]})  # as JSON sends it
    out = _served(package).predict(None, frame)
    results, bad = Predictor(package).predict_images([{"image": i, "nir": n} for i, n in test])
    assert not bad and len(out) == len(test)
    expected = np.stack([p.numpy() for _, p in results])
    got = out[[f"p_{c}" for c in package.meta.class_names]].to_numpy()
    assert np.allclose(got, expected, atol=1e-6)


def test_a_request_without_a_band_column_is_a_bad_request_naming_the_band(column_package):
    from mlflow.exceptions import MlflowException

    package, _, test = column_package
    with pytest.raises(MlflowException, match=r"band 'nir': a column 'nir' .* or 'nir_path'") as caught:
        _served(package).predict(None, pd.DataFrame({"image": [test[0][0].read_bytes()]}))
    assert caught.value.get_http_status_code() == 400
    frame = pd.DataFrame({"image": [test[0][0].read_bytes()] * 2, "nir": [test[0][1].read_bytes(), None]})
    with pytest.raises(MlflowException, match=r"row 1: no file for band 'nir'"):
        _served(package).predict(None, frame)


def test_band_paths_are_read_only_inside_the_allowed_folder(column_package):
    from mlflow.exceptions import MlflowException

    package, leaves, test = column_package
    frame = pd.DataFrame({"path": [str(i.relative_to(leaves)) for i, _ in test[:2]],
                          "nir_path": [str(n.relative_to(leaves)) for _, n in test[:2]]})
    by_path = _served(package, allowed_image_dir=str(leaves)).predict(None, frame)
    by_bytes = _served(package).predict(None, pd.DataFrame({"image": [i.read_bytes() for i, _ in test[:2]],
                                                            "nir": [n.read_bytes() for _, n in test[:2]]}))
    pd.testing.assert_frame_equal(by_path, by_bytes)
    outside = frame.assign(nir_path=["../../etc/passwd", str(test[0][1].relative_to(leaves))])
    with pytest.raises(MlflowException, match=r"row 0: path '../../etc/passwd': no readable image file"):
        _served(package, allowed_image_dir=str(leaves)).predict(None, outside)
    bytes_and_path = pd.DataFrame({"image": [test[0][0].read_bytes()], "nir_path": [str(test[0][1])]})
    with pytest.raises(MlflowException, match=r"'nir_path' inputs are refused: .*without model_config"):
        _served(package).predict(None, bytes_and_path)


def test_the_mlflow_model_says_so_in_its_signature_and_its_input_example_predicts(column_package, tmp_path):
    import mlflow

    from plantpheno.registry.pyfunc import save_pyfunc_model

    package, _, test = column_package
    folder = save_pyfunc_model(package, tmp_path / "mlflow-model")
    model = mlflow.pyfunc.load_model(str(folder))
    inputs = {c.name: c.type.name for c in model.metadata.get_input_schema().inputs}
    assert inputs == {"image": "binary", "path": "string", "nir": "binary", "nir_path": "string"}
    example = model.metadata.load_input_example(str(folder))
    assert set(example.columns) == {"image", "nir"}
    assert len(model.predict(example)) == 1
    sent = pd.DataFrame({"image": [test[0][0].read_bytes()], "nir": [test[0][1].read_bytes()]})
    assert model.predict(sent)["predicted"].iloc[0] in package.meta.class_names


def test_a_pattern_band_is_found_next_to_the_row_path_inside_the_allowed_folder(tmp_path):
    from plantpheno.band_config import BandSpec
    from plantpheno.registry.pyfunc import read_allowed
    from plantpheno.registry.pyfunc_bands import missing_band_columns, row_band_files

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "leaf_NIR.tif").write_bytes(b"nir file")
    band = BandSpec.model_validate({"name": "nir", "pattern": "{stem}_NIR.tif"})
    frame = pd.DataFrame({"path": ["a/leaf.tif"]})
    assert missing_band_columns(frame, (band,)) is None
    found = row_band_files(frame, 0, (band,), tmp_path.resolve(), read_bytes=None, read_path=read_allowed)
    assert found == {"nir": b"nir file"}
    assert "'path' (its file found by the pattern" in missing_band_columns(pd.DataFrame({"image": [b""]}), (band,))
