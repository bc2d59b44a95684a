"""Tests for plantpheno.evaluation.plots: valid PNGs, atomic writes, edge cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from plantpheno.evaluation import plots


def _check_png(path: Path, folder: Path) -> tuple[int, int]:
    assert path.is_file() and path.stat().st_size > 0
    assert sorted(p.name for p in folder.iterdir()) == [path.name]  # no temporary files left
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()
        width, height = image.size
    assert 200 <= width <= 8000 and 200 <= height <= 8000
    return width, height


def _confusion(k: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, k, 20 * k)
    y_pred = np.where(rng.random(20 * k) < 0.7, y_true, rng.integers(0, k, 20 * k))
    counts = np.zeros((k, k), dtype=int)
    np.add.at(counts, (y_true, y_pred), 1)
    return counts


@pytest.mark.parametrize("normalize", [True, False])
def test_confusion_matrix_2_and_30_classes(tmp_path: Path, normalize: bool) -> None:
    sizes = {}
    for k in (2, 30):
        folder = tmp_path / str(k)
        names = [f"Plant_{i}___Some_long_disease_name_{i}" for i in range(k)]
        out = plots.plot_confusion_matrix(_confusion(k).tolist(), names, folder / "cm.png", normalize=normalize)
        assert out == folder / "cm.png"
        sizes[k] = _check_png(out, folder)
    assert sizes[30][0] > sizes[2][0] and sizes[30][1] > sizes[2][1]  # figure grows with classes


def test_confusion_matrix_edge_cases(tmp_path: Path) -> None:
    # empty rows (class never true), all zeros, string path
    out = plots.plot_confusion_matrix([[0, 0], [0, 0]], ["a", "b"], str(tmp_path / "zeros.png"))
    assert isinstance(out, Path)
    one = plots.plot_confusion_matrix([[5]], ["only"], tmp_path / "one.png", title="One class")
    assert one.is_file()
    with pytest.raises(ValueError, match="square"):
        plots.plot_confusion_matrix([[1, 2], [3, 4]], ["a", "b", "c"], tmp_path / "bad.png")


def test_cell_text_never_rounds_to_0_or_100_percent() -> None:
    assert plots._cell_text(1, 0.004, True) == "1\n<1%"
    assert plots._cell_text(199, 0.995, True) == "199\n>99%"
    assert plots._cell_text(5, 1.0, True) == "5\n100%"
    assert plots._cell_text(0, 0.0, True) == "0"
    assert plots._cell_text(7, 0.5, False) == "7"


@pytest.mark.parametrize(
    ("y_true", "y_pred"),
    [
        (np.linspace(0, 20, 30), np.linspace(0, 20, 30) + np.sin(np.arange(30))),
        ([3.0], [4.0]),  # single point
        ([5.0, 5.0, 5.0], [5.0, 5.0, 5.0]),  # all values the same
        ([0.0, 0.0], [0.0, 0.0]),
    ],
)
def test_predicted_vs_true(tmp_path: Path, y_true, y_pred) -> None:
    metrics = {"mae": 0.5, "rmse": 0.7, "r2": 0.9, "num_samples": 3}
    out = plots.plot_predicted_vs_true(y_true, y_pred, tmp_path / "scatter.png", metrics=metrics)
    width, height = _check_png(out, tmp_path)
    assert abs(width - height) < 0.1 * width  # square plot


def test_predicted_vs_true_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="length"):
        plots.plot_predicted_vs_true([1.0, 2.0], [1.0], tmp_path / "x.png")
    with pytest.raises(ValueError, match="non-finite"):
        plots.plot_predicted_vs_true([1.0, 2.0], [1.0, np.nan], tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def _history(epochs: int) -> list[dict]:
    return [
        {"epoch": e, "train/loss": 1.0 / e, "val/loss": 1.2 / e, "train/accuracy": 1 - 0.5 / e,
         "val/accuracy": 1 - 0.6 / e, "lr": 0.01, "note": "text is ignored"}
        for e in range(1, epochs + 1)
    ]


def test_training_curves(tmp_path: Path) -> None:
    out = plots.plot_training_curves(_history(12), tmp_path / "curves.png")
    _check_png(out, tmp_path)


def test_training_curves_families_and_keys(tmp_path: Path) -> None:
    history = _history(3)
    history[1]["val/loss"] = float("nan")  # skipped, not fatal
    del history[2]["val/accuracy"]  # missing in one epoch
    families = plots._collect_series(history)
    assert list(families) == ["loss", "accuracy", "lr"]
    epochs, values = families["loss"]["val"]
    assert epochs == [1.0, 3.0] and values == pytest.approx([1.2, 0.4])
    out = plots.plot_training_curves(history, tmp_path / "c.png", keys=["accuracy"])
    _check_png(out, tmp_path)
    with pytest.raises(ValueError, match="f1"):
        plots.plot_training_curves(history, tmp_path / "c.png", keys=["f1"])


def test_training_curves_single_epoch_without_epoch_key(tmp_path: Path) -> None:
    out = plots.plot_training_curves([{"train/loss": 0.5}], tmp_path / "one.png")
    _check_png(out, tmp_path)
    with pytest.raises(ValueError, match="no numeric"):
        plots.plot_training_curves([], tmp_path / "empty.png")
