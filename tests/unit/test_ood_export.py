"""The OOD score and unknown flag inside an exported graph (registry/ood_export.py): the same numbers as
``OODDetector.scores`` for every score, eager and traced (TorchScript), and the parity check that compares them;
a package made before plantpheno fitted a detector exports as before and says so in one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from plantpheno.evaluation import ood
from plantpheno.registry import ood_export

OLD = Path(__file__).parents[1] / "data" / "old_layout"


def _detector(score: str, tmp_path: Path, *, k: int = 5) -> tuple[ood.OODDetector, np.ndarray, np.ndarray]:
    """A detector fitted on planted clusters, saved and loaded back (as an export reads it from a package), and
    query logits/features: half like the training images, half far from them."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 700)
    features = np.eye(32)[labels % 3] * 10 + rng.normal(size=(700, 32))
    logits = np.eye(3)[labels] * 6 + rng.normal(size=(700, 3)) * 2
    fitted = ood.fit_detector(score, keep=0.95, train_features=features[:500], train_labels=labels[:500],
                              val_features=features[500:600], val_logits=logits[500:600], temperature=1.7, k=k)
    fitted.save(tmp_path)
    detector = ood.OODDetector.load(tmp_path)
    far = rng.normal(size=(50, 32)) * 3
    far[:, 20] += 10
    query_features = np.concatenate([features[600:], far]).astype(np.float32)
    query_logits = np.concatenate([logits[600:], rng.normal(size=(50, 3))]).astype(np.float32)
    return detector, query_logits, query_features


@pytest.mark.parametrize("score", ood.SCORES)
def test_the_graph_scores_as_ood_py_does_eager_and_traced(score, tmp_path):
    detector, logits, features = _detector(score, tmp_path)
    want = detector.scores(logits=logits, features=features)
    flags = detector.unknown(want)
    assert 0 < flags.sum() < len(flags)  # the check sees both known and unknown images
    module = ood_export.OODScore(detector).eval()
    args = (torch.from_numpy(logits), torch.from_numpy(features))
    with torch.no_grad():
        traced = torch.jit.trace(module, args)
        for got_score, got_flag in (module(*args), traced(*args)):
            assert got_score.dtype == torch.float32 and got_flag.dtype == torch.bool
            np.testing.assert_allclose(got_score.numpy(), want, rtol=1e-5, atol=1e-5)
            assert got_flag.numpy().tolist() == flags.tolist()
    if score in ("knn", "energy+knn"):
        assert module.bank.dtype == torch.float16  # the bank stays float16 in the file
    if score == "mahalanobis":  # ood.py's own constants, not re-derived
        assert np.array_equal(module.precision.numpy(), detector._maha[1])


def test_knn_with_k_above_the_bank_takes_its_farthest_row(tmp_path):
    detector, logits, features = _detector("knn", tmp_path, k=5)
    small = ood.OODDetector(score="knn", threshold=detector.threshold, keep=0.95, k=50, bank=detector.bank[:7])
    with torch.no_grad():
        got, _ = ood_export.OODScore(small)(torch.from_numpy(logits), torch.from_numpy(features))
    np.testing.assert_allclose(got.numpy(), small.scores(features=features), rtol=1e-5)


def test_knn_distance_to_a_stored_row_is_zero_not_a_rounding_floor():
    """knn_score measures its nearest candidates exactly (|a - b|^2 of the float16 bank rows, float64): "2 - 2 a.b" in
    float32 put an image ~0.003 from its own row at D = 1280, a floor where the square root magnified rounding
    100-fold, so an exported graph's score differed from predict's by ~0.03 (standardised) for near-duplicates."""
    rng = np.random.default_rng(0)
    features = np.abs(rng.normal(size=(300, 1280))).astype(np.float32)  # ReLU-like: every pair close in angle
    detector = ood.fit_detector("energy+knn", keep=0.95, train_features=features[:200], val_features=features[200:],
                                val_logits=rng.normal(size=(100, 5)), k=1)
    rows = detector.bank[:32].astype(np.float32)
    assert ood.knn_score(rows, detector.bank, 1).max() < 1e-4
    logits = rng.normal(size=(32, 5)).astype(np.float32)
    with torch.no_grad():
        got, _ = ood_export.OODScore(detector)(torch.from_numpy(logits), torch.from_numpy(rows))
    np.testing.assert_allclose(got.numpy(), detector.scores(logits=logits, features=rows), atol=1e-4)


def test_compare_holds_the_score_to_tolerance_and_the_flag_away_from_the_threshold():
    want = np.array([0.2, 0.9, 1.0000001, 40.0])
    flags = want > 1.0
    assert ood_export.compare((want, flags), (want.astype(np.float32), flags), 1.0, 1e-4)[2] is None
    tipped = flags.copy()
    tipped[2] = not tipped[2]  # within tolerance of the threshold: rounding may tip it
    diff, near, failed = ood_export.compare((want, flags), (want, tipped), 1.0, 1e-4)
    assert failed is None and near == 1
    wrong = flags.copy()
    wrong[0] = True  # 0.2 is far below the threshold: a real error
    assert "unknown differs on 1 of 4" in ood_export.compare((want, flags), (want, wrong), 1.0, 1e-4)[2]
    off = want + np.array([0, 0, 0, 0.01])  # 40 +- 0.01 is 2.5e-4 of it
    assert "ood_score differs by 2.50e-04" in ood_export.compare((want, flags), (off, flags), 1.0, 1e-4)[2]


def test_a_package_without_a_detector_exports_as_before_and_says_so(tmp_path):
    from plantpheno.registry.export import export_package
    from plantpheno.registry.package import ModelPackage

    folder = shutil.copytree(OLD / "package", tmp_path / "old-package")
    out = tmp_path / "old.pt"
    report = export_package(ModelPackage.open(folder), "torchscript", out)
    assert report.ood == (f"{folder} has no OOD threshold (trained or registered before plantpheno fitted one, or "
                          f"with evaluation.ood.enabled: false): the TorchScript file gives its outputs only, no "
                          f"ood_score and no unknown") and report.ood in report.summary()
    extra = {ood_export.OOD_FILE: ""}
    loaded = torch.jit.load(str(out), _extra_files=extra)
    assert not extra[ood_export.OOD_FILE]  # no OOD metadata written
    assert isinstance(loaded(ModelPackage.open(folder).sample_inputs()), torch.Tensor)  # the probabilities alone
