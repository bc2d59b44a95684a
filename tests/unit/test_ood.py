"""OOD scores, the fitted detector and selective prediction, on planted features (evaluation/ood.py, selective.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from plantpheno.errors import PlantPhenoError
from plantpheno.evaluation import ood, selective


def _clusters(rng: np.random.Generator, n: int, dims: int = 32, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Features around ``classes`` directions in the first coordinates (training images of a few classes)."""
    labels = rng.integers(0, classes, n)
    centres = np.eye(dims)[:classes] * 10
    return centres[labels] + rng.normal(size=(n, dims)), labels


@pytest.fixture
def planted() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    train, labels = _clusters(rng, 600)
    val, val_labels = _clusters(rng, 400)
    far = np.zeros((20, 32))
    far[:, 20] = 10  # a direction no training image points in
    far += rng.normal(size=far.shape)
    return {"train": train, "labels": labels, "val": val, "val_labels": val_labels, "far": far}


@pytest.mark.parametrize("score", ["knn", "mahalanobis"])
def test_feature_scores_flag_a_far_point_and_keep_about_95_percent_of_val(planted, score):
    detector = ood.fit_detector(score, keep=0.95, train_features=planted["train"], train_labels=planted["labels"],
                                val_features=planted["val"], k=5)
    assert 0.95 <= detector.val_kept <= 0.96
    assert detector.unknown(detector.scores(features=planted["far"])).all()
    # a fresh in-distribution image near a class centre is kept
    near = np.eye(32)[1:2] * 10 + 0.1
    assert not detector.unknown(detector.scores(features=near)).any()
    fresh, _ = _clusters(np.random.default_rng(5), 1000)
    assert 0.92 <= 1 - detector.unknown(detector.scores(features=fresh)).mean() <= 0.98


def test_knn_distance_is_the_kth_neighbour_on_the_unit_sphere():
    bank = ood.normalise(np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
    d = ood.knn_score(np.array([[2.0, 0.0]]), bank, 1)
    assert d[0] == pytest.approx(0.0, abs=1e-6)
    assert ood.knn_score(np.array([[2.0, 0.0]]), bank, 2)[0] == pytest.approx(np.sqrt(2), abs=1e-6)
    assert ood.knn_score(np.array([[2.0, 0.0]]), bank, 3)[0] == pytest.approx(2.0, abs=1e-6)


def test_msp_and_energy_rank_a_flat_output_above_a_peaked_one():
    logits = np.array([[10.0, 0.0, 0.0], [0.1, 0.0, 0.05]])
    for fn in (ood.msp_score, ood.energy_score):
        scores = fn(logits)
        assert scores[1] > scores[0]
    assert ood.msp_score(np.array([[0.0, 0.0]]))[0] == pytest.approx(0.5)
    # energy at temperature T: -T logsumexp(z / T)
    assert ood.energy_score(np.array([[1.0, 1.0]]), 2.0)[0] == pytest.approx(-2 * (0.5 + np.log(2)))


def test_detector_on_logits_uses_the_temperature(planted):
    rng = np.random.default_rng(1)
    val_logits = rng.normal(size=(200, 3)) * 4
    detector = ood.fit_detector("energy", keep=0.9, val_logits=val_logits, temperature=2.0)
    assert detector.temperature == 2.0 and detector.bank is None
    assert detector.scores(logits=val_logits) == pytest.approx(ood.energy_score(val_logits, 2.0))
    assert detector.unknown(detector.scores(logits=np.full((1, 3), -5.0))).all()  # a weak response everywhere


def test_detector_round_trips_with_checksums_and_a_bounded_float16_bank(planted, tmp_path):
    detector = ood.fit_detector("knn", keep=0.95, train_features=planted["train"], val_features=planted["val"],
                                k=3, max_train_features=100, seed=4)
    assert detector.bank.shape == (100, 32) and detector.bank.dtype == np.float16
    detector.save(tmp_path)
    assert (tmp_path / "ood.json.sha256").is_file() and (tmp_path / "ood_features.npz.sha256").is_file()
    loaded = ood.OODDetector.load(tmp_path)
    assert loaded == detector
    assert loaded.scores(features=planted["far"]) == pytest.approx(detector.scores(features=planted["far"]))
    assert ood.OODDetector.load(tmp_path / "missing") is None
    record = json.loads((tmp_path / "ood.json").read_text())
    assert record["features_bytes"] == (tmp_path / "ood_features.npz").stat().st_size


def test_a_damaged_detector_file_is_refused(planted, tmp_path):
    ood.fit_detector("knn", keep=0.95, train_features=planted["train"], val_features=planted["val"]).save(tmp_path)
    (tmp_path / "ood_features.npz").write_bytes(b"not the file")
    with pytest.raises(PlantPhenoError, match="ood_features.npz"):
        ood.OODDetector.load(tmp_path)


def test_a_regression_detector_needs_no_labels(planted):
    detector = ood.fit_detector("knn", keep=0.95, train_features=planted["train"], val_features=planted["val"])
    assert detector.labels is None and detector.score == "knn"
    with pytest.raises(ValueError, match="labels"):
        ood.fit_detector("mahalanobis", keep=0.95, train_features=planted["train"], val_features=planted["val"])


def test_auroc_and_fpr95():
    inside, outside = np.arange(100.0), np.arange(100.0) + 1000
    assert ood.auroc(inside, outside) == 1.0 and ood.fpr_at_tpr(inside, outside) == 0.0
    assert ood.auroc(outside, inside) == 0.0 and ood.fpr_at_tpr(outside, inside) == 1.0
    assert ood.auroc(inside, inside) == pytest.approx(0.5)


def test_selective_threshold_reaches_the_target_on_the_kept_images():
    conf = np.array([0.99, 0.95, 0.9, 0.8, 0.7, 0.6])
    correct = np.array([1, 1, 1, 0, 1, 0], dtype=bool)
    assert selective.choose_threshold(conf, correct, 1.0) == 0.9
    assert selective.choose_threshold(conf, correct, 0.8) == 0.7  # 4 of 5 right
    assert selective.choose_threshold(np.array([0.5]), np.array([False]), 0.9) is None
    # ties: a threshold cannot split images of equal confidence
    assert selective.choose_threshold(np.array([0.9, 0.9]), np.array([True, False]), 1.0) is None
    curve = selective.risk_coverage(conf, correct)
    assert curve["coverage"][-1] == 1.0 and curve["risk"][-1] == pytest.approx(2 / 6)
    assert curve["risk"][0] == 0.0


def test_wilson_interval():
    low, high = selective.wilson(50, 100)
    assert low == pytest.approx(0.4038, abs=1e-3) and high == pytest.approx(0.5962, abs=1e-3)
    assert selective.wilson(0, 0) is None
    assert selective.wilson(10, 10)[1] == 1.0 and selective.wilson(0, 10)[0] == 0.0


def test_energy_plus_knn_flags_what_either_part_finds_and_round_trips(planted, tmp_path):
    rng = np.random.default_rng(2)
    logits = lambda labels: np.eye(3)[labels] * 8 + rng.normal(size=(len(labels), 3))  # noqa: E731
    detector = ood.fit_detector("energy+knn", keep=0.95, train_features=planted["train"], val_features=planted["val"],
                                val_logits=logits(planted["val_labels"]), k=5)
    assert 0.95 <= detector.val_kept <= 0.96 and set(detector.norms) == {"energy", "knn"}
    near = np.eye(32)[:1] * 10
    confident = logits(np.array([0]))
    assert not detector.unknown(detector.scores(logits=confident, features=near)).any()
    assert detector.unknown(detector.scores(logits=confident, features=planted["far"][:1])).all()  # not a leaf
    assert detector.unknown(detector.scores(logits=np.full((1, 3), -8.0), features=near)).all()  # no class responds
    detector.save(tmp_path)
    loaded = ood.OODDetector.load(tmp_path)
    assert loaded.norms == detector.norms
    assert loaded.scores(logits=confident, features=near) == pytest.approx(detector.scores(logits=confident,
                                                                                           features=near), abs=1e-3)
