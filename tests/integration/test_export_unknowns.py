"""Exports of a model with an OOD detector (registry/ood_export.py), end to end: the tiny fixture run packaged,
exported to ONNX (run with ONNX Runtime) and TorchScript (torch.jit.load); both give ``Model.predict``'s
probabilities, ``ood_score`` and ``unknown`` on the same images, and carry the threshold in the file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from plantpheno.evaluation import ood
from plantpheno.registry import ood_export


@pytest.fixture(scope="module")
def package(trained_run, disease_root, tmp_path_factory):
    """The tiny fixture run's package (its detector: the default energy+knn)."""
    from plantpheno.registry.package import package_run

    run = trained_run(data={"root": str(disease_root)})
    return package_run(run.run_dir, tmp_path_factory.mktemp("ood-export") / "package")


def _images(disease_root: Path, folder: Path) -> list[Path]:
    """8 training-like images (every class) and 2 of noise, which the detector flags."""
    files = sorted(f for f in disease_root.rglob("*") if f.is_file() and f.suffix != ".csv")[::8]
    noise = np.random.default_rng(0).integers(0, 256, (2, 40, 40, 3), dtype=np.uint8)
    for i, pixels in enumerate(noise):
        Image.fromarray(pixels).save(folder / f"noise{i}.png")
    return files + [folder / "noise0.png", folder / "noise1.png"]


def _export_input(model, path: Path) -> np.ndarray:
    """The export's input for one image: predict's own preprocessing, un-normalised back to [0, 1]."""
    from plantpheno.registry.predict import to_rgb_image

    predictor, m = model._predictor, model.metadata
    x = predictor.transform(to_rgb_image(str(path), min_side=m.image_size))
    return (x * torch.tensor(m.std).view(3, 1, 1) + torch.tensor(m.mean).view(3, 1, 1)).numpy()


def _load(fmt: str, path: Path):
    """The exported file as a function of a batch, and the OOD metadata it carries."""
    if fmt == "onnx":
        import onnx
        import onnxruntime as ort

        props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert [o.name for o in session.get_outputs()] == ["outputs", "ood_score", "unknown"]
        return (lambda x: session.run(None, {"images": x})), json.loads(props[ood_export.OOD_KEY])
    extra = {ood_export.OOD_FILE: ""}
    loaded = torch.jit.load(str(path), _extra_files=extra)

    def run(x: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            return [t.numpy() for t in loaded(torch.from_numpy(x))]

    return run, json.loads(extra[ood_export.OOD_FILE])


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_the_export_gives_predicts_ood_score_and_unknown(package, disease_root, tmp_path, fmt):
    from plantpheno import load_model
    from plantpheno.registry.export import export_package

    detector = ood.OODDetector.load(package.folder)
    assert detector is not None and detector.score == "energy+knn"
    out = tmp_path / f"model.{fmt}"
    report = export_package(package, fmt, out)
    assert report.ood.startswith("outputs ood_score and unknown: energy+knn") and report.ood_score_diff < 1e-4
    assert report.num_images == len(package.sample_inputs()) + 4  # the stored images and 4 random ones

    run, notes = _load(fmt, out)
    assert notes["threshold"] == detector.threshold and notes["detector"]["score"] == "energy+knn"
    files = _images(disease_root, tmp_path)
    model = load_model(str(package.folder))
    predictions = model.predict([str(f) for f in files])
    probs, score, unknown = run(np.stack([_export_input(model, f) for f in files]).astype(np.float32))
    assert unknown.dtype == np.bool_ and score.dtype == np.float32
    # predict runs the network channels-last on its normalised tensors, the export on them un-normalised (float
    # rounding ~1e-7); energy+knn divides the knn part by its small validation spread, so those 1e-6 differences in
    # the features come out as up to ~2e-4 in the score (the parity check itself, on identical inputs, holds 1e-4)
    want = np.array([p.ood_score for p in predictions])
    np.testing.assert_allclose(score, want, rtol=1e-3, atol=1e-3)
    near = np.abs(want - detector.threshold) <= 1e-3
    assert [u for u, n in zip(unknown.tolist(), near) if not n] == [p.unknown for p, n in zip(predictions, near)
                                                                      if not n]
    assert all(p.unknown for p in predictions[-2:]) and unknown[-2:].all()
    np.testing.assert_allclose(probs, [list(p.probabilities.values()) for p in predictions], atol=1e-5)


def test_a_trait_model_exports_its_knn_score(trained_run, rosette_manifest, tmp_path):
    """A regression model's detector is knn on the pooled features (it has no class probabilities): its export
    gives the trait, ood_score and unknown, and passes the same check."""
    from plantpheno.registry.export import export_package
    from plantpheno.registry.package import package_run

    run = trained_run(task="regression", data={"manifest": str(rosette_manifest)})
    package = package_run(run.run_dir, tmp_path / "package")
    assert ood.OODDetector.load(package.folder).score == "knn"
    report = export_package(package, "torchscript", tmp_path / "trait.pt")
    assert report.ood.startswith("outputs ood_score and unknown: knn") and report.ood_score_diff < 1e-4
    value, score, unknown = _load("torchscript", tmp_path / "trait.pt")[0](package.sample_inputs().numpy())
    assert value.shape == score.shape == unknown.shape == (len(package.sample_inputs()),)
