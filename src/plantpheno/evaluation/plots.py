"""PNG plots of evaluation results: confusion matrix, predicted vs true, training curves.

Figures are built with ``matplotlib.figure.Figure`` on an Agg canvas, never pyplot: no global
state, no display, safe in worker threads and headless machines. Every PNG is written atomically
(temporary sibling file, then rename), so a crash never leaves a partial image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from plantpheno.files.atomic import atomic_write_with
from plantpheno.files.csvfile import printable
from plantpheno.run.epochlog import read_epoch_log
from plantpheno.run.folder import RunDir

_DPI = 120


def _save(fig: Figure, path: str | Path) -> Path:
    """Render ``fig`` to PNG at ``path`` atomically and return the path."""
    FigureCanvasAgg(fig)
    target = Path(path)
    atomic_write_with(target, lambda fh: fig.savefig(fh, format="png", dpi=_DPI))
    return target


def _as_finite_1d(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return array


# --------------------------------------------------------------------------- confusion matrix


def _cell_text(count: int, fraction: float, normalize: bool) -> str:
    if not normalize or count == 0:
        return str(count)
    # Never show 0% for a non-zero count, nor 100% for a row with errors.
    percent = "<1" if fraction < 0.01 else ">99" if 0.99 < fraction < 1.0 else f"{100.0 * fraction:.0f}"
    return f"{count}\n{percent}%"


def _annotate_cells(
    ax: Any, counts: np.ndarray, shade: np.ndarray, *, normalize: bool, vmax: float, fontsize: float,
) -> None:
    """Write each cell's count (and row % when ``normalize``), white on dark cells, black on light."""
    for i, j in np.ndindex(counts.shape):
        color = "white" if shade[i, j] > 0.5 * vmax else ("black" if counts[i, j] else "0.6")
        text = _cell_text(int(counts[i, j]), float(shade[i, j]), normalize)
        ax.text(j, i, text, ha="center", va="center", color=color, fontsize=fontsize, linespacing=1.0)


def plot_confusion_matrix(
    confusion: Sequence[Sequence[int]], class_names: Sequence[str], path: str | Path, *,
    normalize: bool = True, title: str = "Confusion matrix",
) -> Path:
    """Write a PNG heat map of a confusion matrix (rows = true class, columns = predicted class).

    Cells show counts, and with ``normalize`` also the row percentage (recall share), which then
    sets the colour; otherwise colour follows counts. The figure grows with the number of classes
    and with the longest class name, x tick labels are rotated, so 2 to 40 classes stay readable.
    Written atomically; returns ``path`` as a ``Path``.
    """
    counts = np.asarray(confusion, dtype=np.int64)
    k = len(class_names)
    if counts.ndim != 2 or counts.shape != (k, k) or k == 0:
        raise ValueError(f"confusion must be square with one row per class name ({k}), got shape {counts.shape}")
    rows = counts.sum(axis=1, keepdims=True)
    shade = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows != 0) if normalize else counts.astype(float)
    # a class folder name that is not UTF-8 (lone surrogates) cannot be drawn: show its bytes escaped (\xe4)
    names = [printable(str(name)) for name in class_names]
    cell = 0.6 if k <= 20 else 0.45  # inches per cell
    label_inches = 0.09 * max(len(name) for name in names) + 0.6
    fig = Figure(figsize=(max(5.0, k * cell + label_inches + 1.6), max(4.0, k * cell + 0.87 * label_inches + 1.0)),
                 layout="constrained")
    ax = fig.add_subplot()
    vmax = 1.0 if normalize else max(1.0, float(shade.max()))
    image = ax.imshow(shade, cmap="Blues", vmin=0.0, vmax=vmax)
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of true class" if normalize else "count")
    tick_size = 9 if k <= 20 else 7
    ax.set_xticks(range(k), names, rotation=60, ha="right", rotation_mode="anchor", fontsize=tick_size)
    ax.set_yticks(range(k), names, fontsize=tick_size)
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    ax.set_title(title)
    fontsize = min(10.0, cell * 72 * (0.28 if normalize else 0.38) / max(1, len(str(counts.max())) / 3))
    _annotate_cells(ax, counts, shade, normalize=normalize, vmax=vmax, fontsize=fontsize)
    return _save(fig, path)


# --------------------------------------------------------------------------- regression scatter


def plot_predicted_vs_true(
    y_true: Any, y_pred: Any, path: str | Path, *,
    title: str = "Predicted vs true", metrics: dict | None = None,
) -> Path:
    """Write a PNG scatter of predictions against true values with the y = x line.

    Both axes share the same limits (square plot). If ``metrics`` (e.g. the output of
    ``regression_metrics``) is given, its MAE, RMSE and R² (whichever are present) are written in
    the upper-left corner. Written atomically; returns ``path`` as a ``Path``.
    """
    true, pred = _as_finite_1d(y_true, "y_true"), _as_finite_1d(y_pred, "y_pred")
    if true.shape != pred.shape:
        raise ValueError(f"y_true and y_pred differ in length: {true.size} vs {pred.size}")
    low, high = float(min(true.min(), pred.min())), float(max(true.max(), pred.max()))
    pad = 0.05 * (high - low) if high > low else max(0.5, 0.05 * abs(high))
    low, high = low - pad, high + pad
    fig = Figure(figsize=(5.5, 5.5), layout="constrained")
    ax = fig.add_subplot()
    ax.plot([low, high], [low, high], color="0.4", linestyle="--", linewidth=1, label="y = x")
    ax.scatter(true, pred, s=14, alpha=0.6 if true.size > 50 else 0.9, edgecolors="none", label="samples")
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel("True")
    ax.set_ylabel("Predicted")
    ax.set_title(title)
    ax.legend(loc="lower right")
    lines = [f"{label} = {metrics[key]:.3g}" for key, label in (("mae", "MAE"), ("rmse", "RMSE"), ("r2", "R²"))
             if metrics and key in metrics]
    if lines:
        ax.text(0.03, 0.97, "\n".join(lines), transform=ax.transAxes, va="top", ha="left",
                bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8})
    return _save(fig, path)


# --------------------------------------------------------------------------- training curves


def _split_key(key: str) -> tuple[str, str]:
    """``"val/loss"`` -> ``("loss", "val")``; a key without '/' is its own family and label."""
    prefix, sep, name = key.partition("/")
    return (name, prefix) if sep else (key, key)


def _collect_series(history: Sequence[dict]) -> dict[str, dict[str, tuple[list[float], list[float]]]]:
    """family -> label -> (epochs, values), keeping only finite numeric values, in first-seen order."""
    families: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    for position, record in enumerate(history, start=1):
        epoch = record.get("epoch", position)
        for key, value in record.items():
            if key == "epoch" or isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
                continue
            if not math.isfinite(float(value)):
                continue
            family, label = _split_key(str(key))
            epochs, values = families.setdefault(family, {}).setdefault(label, ([], []))
            epochs.append(float(epoch))
            values.append(float(value))
    return families


def plot_training_curves(history: Sequence[dict], path: str | Path, *, keys: Sequence[str] | None = None) -> Path:
    """Write a PNG of per-epoch metrics: one subplot per metric family, train vs val lines.

    ``history`` is a list of per-epoch dicts such as ``{"epoch": 1, "train/loss": 0.9,
    "val/loss": 1.1, "val/accuracy": 0.6}``. The family is the part after the first '/' (keys
    without '/' such as ``"lr"`` form their own family); epochs missing a value or holding a
    non-finite one are skipped. ``keys`` picks and orders the families (e.g. ``["loss",
    "accuracy"]``); by default ``loss`` comes first, then the others as first seen.
    Written atomically; returns ``path`` as a ``Path``.
    """
    series = _collect_series(history)
    if keys is None:
        order = sorted(series, key=lambda family: family != "loss")
    else:
        missing = [family for family in keys if family not in series]
        if missing:
            raise ValueError(f"no numeric values for metric(s) {missing} in history; found {sorted(series)}")
        order = list(keys)
    if not order:
        raise ValueError("history holds no numeric metrics to plot")
    ncols = min(3, len(order))
    nrows = math.ceil(len(order) / ncols)
    fig = Figure(figsize=(4.5 * ncols, 3.4 * nrows), layout="constrained")
    known = ("train", "val", "test")
    for n, family in enumerate(order, start=1):
        ax = fig.add_subplot(nrows, ncols, n)
        labels = sorted(series[family], key=lambda label: known.index(label) if label in known else len(known))
        others = [label for label in labels if label not in known]
        for label in labels:
            epochs, values = series[family][label]
            color = f"C{known.index(label) if label in known else len(known) + others.index(label)}"
            ax.plot(epochs, values, marker="o" if len(values) <= 30 else None, markersize=3, color=color, label=label)
        ax.set_title(family)
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        ax.legend()
    return _save(fig, path)


def plot_run_history(run: RunDir) -> Path:
    """``training_curves.png`` of a run, from its ``metrics.jsonl`` (a torn line was reported at resume)."""
    history = [{k: v for k, v in record.items() if k == "epoch" or k.startswith(("train/", "val/"))}
               for record in read_epoch_log(run.metrics_log).records]
    return plot_training_curves(history, run.training_curves)
