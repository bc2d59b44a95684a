"""data.bands end to end: four-band 16-bit TIFFs -> train -> evaluate -> package -> predict (issue 31)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from plantpheno import pipeline
from plantpheno.config import validate_config
from plantpheno.errors import DataError
from conftest import tiny_config

pytestmark = pytest.mark.slow
BANDS = ["red", "green", "blue", "nir"]


@pytest.fixture(scope="module")
def leaves(tmp_path_factory) -> Path:
    from plantpheno.data.synth_bands import synthesize_multispectral

    return synthesize_multispectral(tmp_path_factory.mktemp("ms") / "set", per_class=16, image_size=32, seed=1)


@pytest.fixture(scope="module")
def band_run(leaves, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("run")
    raw = tiny_config(tmp, data={"root": str(leaves), "bands": [*BANDS, "ndvi"]}, training={"epochs": 2})
    return pipeline.train(validate_config(raw), handle_signals=False).run_dir


def test_a_band_run_records_its_bands_and_predicts_from_band_files(band_run, leaves, tmp_path) -> None:
    from plantpheno.api import load_model

    assert pipeline.report_run(band_run).is_file()  # the report draws band images as a composite
    info = json.loads((band_run / "dataset.json").read_text())
    assert info["bands"]["names"] == [*BANDS, "ndvi"] and len(info["bands"]["mean"]) == 5
    files = sorted((leaves / "stressed").glob("*.tif"))[:3]
    with load_model(band_run) as model:
        bands = model.meta["bands"]
        assert bands["names"] == [*BANDS, "ndvi"] and bands["input_adapter"].startswith("model.input_adapter=")
        from_files = model.predict(files)
        arrays = model.predict([tifffile.imread(f) for f in files])  # (H, W, 4) arrays give the same answer
        assert [p.label for p in from_files] == [p.label for p in arrays]
        assert all(abs(a.confidence - b.confidence) < 1e-5 for a, b in zip(from_files, arrays))
        with pytest.raises(DataError, match=r"has 3 band\(s\); data.bands needs nir \(channel 3\).*trained on bands"):
            model.predict(np.zeros((32, 32, 3), np.uint16))


def test_predict_cli_with_a_three_band_file_is_one_message_and_exit_2(band_run, tmp_path) -> None:
    three = tmp_path / "rgb.tif"
    tifffile.imwrite(three, np.zeros((32, 32, 3), np.uint16), photometric="minisblack", planarconfig="contig")
    done = subprocess.run([sys.executable, "-m", "plantpheno", "predict", str(band_run), str(three)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "trained on bands red, green, blue, nir, ndvi" in done.stderr


def test_a_file_with_too_few_bands_stops_training_naming_it(leaves, tmp_path) -> None:
    data = tmp_path / "data"
    shutil.copytree(leaves, data)
    bad = data / "healthy" / "three_bands.tif"
    tifffile.imwrite(bad, np.zeros((32, 32, 3), np.uint16), photometric="minisblack", planarconfig="contig")
    raw = tiny_config(tmp_path, data={"root": str(data), "bands": BANDS})
    with pytest.raises(DataError, match=r"three_bands.tif: has 3 band\(s\); data.bands needs nir"):
        pipeline.train(validate_config(raw), handle_signals=False)


def test_a_band_model_registers_predicts_from_the_registry_and_exports(band_run, leaves, tmp_path) -> None:
    """Registration writes the MLflow model (its input example is a band TIFF); the registered version predicts as
    the run does, and exports (its bands in their own units: registry/band_export.py) with the parity check."""
    from plantpheno.api import load_model, register_model

    uri = f"sqlite:///{tmp_path / 'registry.db'}"
    version = register_model(band_run, "bandnet", registry=uri, force=True)
    files = sorted((leaves / "healthy").glob("*.tif"))[:4]
    with load_model(band_run) as run_model, load_model(f"bandnet/{version.version}", registry=uri) as registered:
        got, want = registered.predict(files), run_model.predict(files)
        assert [p.label for p in got] == [p.label for p in want]
        assert [p.confidence for p in got] == pytest.approx([p.confidence for p in want], abs=1e-6)
    done = subprocess.run([sys.executable, "-m", "plantpheno", "models", "export", f"bandnet/{version.version}",
                           str(tmp_path / "m.pt"), "--format", "torchscript", "--registry", uri],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and (tmp_path / "m.pt").is_file(), done.stderr
