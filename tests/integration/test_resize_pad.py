"""``data.resize: pad`` end to end: a run trained and evaluated on wide images, its package, ``predict`` and an
ONNX export all see every row and column of the image; with ``crop`` the ends of a wide image never matter."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from plantpheno import pipeline
from plantpheno.cli import main as cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wide_root(tmp_path_factory) -> Path:
    """Two classes of wide (3:1) images: class a has a light band in its middle, class b a dark one."""
    root = tmp_path_factory.mktemp("wide")
    rng = np.random.default_rng(5)
    for label, level in (("a", 190), ("b", 60)):
        (root / label).mkdir()
        for i in range(12):
            image = rng.integers(100, 156, (32, 96, 3), dtype=np.uint8)
            image[10:22, 36:60] = level
            Image.fromarray(image).save(root / label / f"{label}{i}.png")
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory, wide_root):
    """One tiny run per resize mode (same seed and data)."""
    from conftest import tiny_config
    from plantpheno.config import validate_config

    tmp = tmp_path_factory.mktemp("runs")
    out = {}
    for resize in ("pad", "crop"):
        raw = tiny_config(tmp, run_name=resize, data={"root": str(wide_root), "resize": resize, "image_size": 32,
                                                      "augment": {"keep_whole": True, "rotation": 90}},
                          tracking={"system_metrics_interval": 0}, training={"epochs": 1, "progress_bar": False})
        out[resize] = pipeline.train(validate_config(raw))
    return out


def _edge_pair(source: Path, folder: Path) -> tuple[Path, Path]:
    """The image, and a copy whose outer 12 columns on each side (outside the centre square) are black."""
    folder.mkdir(exist_ok=True)
    pixels = np.asarray(Image.open(source).convert("RGB")).copy()
    original, edited = folder / "original.png", folder / "edited.png"
    Image.fromarray(pixels).save(original)
    pixels[:, :12] = 0
    pixels[:, -12:] = 0
    Image.fromarray(pixels).save(edited)
    return original, edited


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as fh:
        return {row["path"]: row for row in csv.DictReader(fh)}


def test_pad_reaches_evaluation_predict_and_an_onnx_export(runs, tmp_path):
    import onnx
    import onnxruntime as ort

    from plantpheno.data.batch_augment import pad_fill
    from plantpheno.data.images import load_rgb
    from plantpheno.registry.export import PREPROCESSING_KEY, export_package
    from plantpheno.registry.package import package_run, raw_transform
    from plantpheno.registry.predict import Predictor

    pad = runs["pad"]
    package = package_run(pad.run_dir, tmp_path / "pkg")
    assert package.meta.resize == "pad"
    assert "letterboxed" in (tmp_path / "pkg" / "MODEL_CARD.md").read_text()
    stored = package.sample_inputs()  # the export check's images: letterboxed, so a fill border above and below
    fill = torch.tensor(pad_fill(package.meta.mean), dtype=torch.float32).view(1, 3, 1, 1) / 255
    assert stored is not None and torch.equal(stored[:, :, :5, :], fill.expand(len(stored), 3, 5, 32))

    # predict applies the package's pad resize: the run's own evaluation and predict agree image by image
    evaluated = _rows(pad.run_dir / "eval/test/predictions.csv")
    out = tmp_path / "preds.csv"
    assert cli(["predict", str(pad.run_dir), *evaluated, "--out", str(out)]) == 0
    for path, row in _rows(out).items():
        for key in (k for k in row if k.startswith("p_")):
            assert float(row[key]) == pytest.approx(float(evaluated[path][key]), abs=2e-6)

    # blacking out the ends of the image (outside its centre square) changes what a pad model predicts
    original, edited = _edge_pair(Path(next(iter(evaluated))), tmp_path / "pair")
    predictor = Predictor(package)
    results, bad = predictor.predict_files([original, edited])
    assert not bad
    probs = torch.stack([p for _, p in results])
    assert (probs[0] - probs[1]).abs().max() > 1e-4

    # ... and what the ONNX export predicts, on the package's preprocessing of the same files
    report = export_package(package, "onnx", tmp_path / "model.onnx")
    assert report.max_abs_diff < 1e-4
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "model.onnx")).metadata_props}
    notes = json.loads(props[PREPROCESSING_KEY])
    assert notes["resize"] == "pad" and notes["image_size"] == 32 and len(notes["pad_fill"]) == 3
    inputs = torch.stack([raw_transform(package.meta)(load_rgb(p)) for p in (original, edited)]).numpy()
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    exported = session.run(None, {"images": inputs})[0]
    np.testing.assert_allclose(exported, probs.numpy(), atol=1e-4)


def test_crop_never_sees_the_ends_of_a_wide_image(runs, tmp_path):
    from plantpheno.registry.package import package_run
    from plantpheno.registry.predict import Predictor

    crop = runs["crop"]
    evaluated = _rows(crop.run_dir / "eval/test/predictions.csv")
    original, edited = _edge_pair(Path(next(iter(evaluated))), tmp_path / "pair")
    results, _ = Predictor(package_run(crop.run_dir, tmp_path / "pkg")).predict_files([original, edited])
    assert torch.equal(results[0][1], results[1][1])
