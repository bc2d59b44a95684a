"""Exports of a model of ``data.bands`` (issue 31): the graph takes its bands in the file's own units, carries their
names and scaling, passes its parity check, and gives what ``predict`` gives (registry/band_export.py)."""

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
    leaves = synthesize_multispectral(tmp / "set", per_class=12, image_size=32, seed=3)
    raw = tiny_config(tmp, data={"root": str(leaves), "bands": BANDS}, training={"epochs": 1},
                      evaluation={"ood": {"enabled": False}})
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
    assert report.num_images == len(samples) and report.max_abs_diff <= 1e-4

    extra = {PREPROCESSING_FILE: ""}
    loaded = torch.jit.load(str(out), _extra_files=extra)
    notes = json.loads(extra[PREPROCESSING_FILE])
    m = package.meta.bands
    assert notes["bands"]["names"] == BANDS and notes["bands"]["mean"] == list(m.mean)
    assert notes["bands"]["low"] == list(m.low) and "own units" in notes["input"]

    files = sorted(leaves.rglob("*.tif"))[:6]
    predicted, bad = Predictor(package).predict_files(files)
    assert not bad
    with torch.no_grad():
        exported = loaded(torch.stack([export_input(package.meta, f) for f in files]))
    want = torch.stack([p for _, p in predicted])
    assert exported.argmax(1).tolist() == want.argmax(1).tolist()
    assert torch.allclose(exported, want, atol=1e-5)


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
