"""The report's figures, drawn with matplotlib's object API (no pyplot state) and returned as PNG data URIs,
so the HTML page carries them inline."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 80


def data_uri(fig: Figure) -> str:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _series(history: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    pairs = [(float(r["epoch"]), float(r[key])) for r in history
             if isinstance(r.get(key), (int, float)) and math.isfinite(float(r[key]))]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def training_curves(history: Sequence[dict[str, Any]], *, metric: str, best_epoch: int | None,
                    phase_change: int | None) -> str:
    """Loss, the monitored metric and the learning rate per epoch; the best epoch and the start of the
    fine-tune phase marked on each panel."""
    fig = Figure(figsize=(12, 3.3), layout="constrained")
    panels = (("loss", ("train/loss", "val/loss")), (metric, (f"train/{metric}", f"val/{metric}")), ("learning rate",
                                                                                                     ("lr",)))
    for n, (title, keys) in enumerate(panels, start=1):
        ax = fig.add_subplot(1, 3, n)
        for key, colour in zip(keys, ("C0", "C1")):
            epochs, values = _series(history, key)
            if epochs:
                ax.plot(epochs, values, marker="o" if len(epochs) <= 40 else None, markersize=3, color=colour,
                        label=key.split("/")[0] if "/" in key else key)
        if title == "learning rate":
            _, lrs = _series(history, "lr")
            if lrs and min(lrs) > 0 and max(lrs) / min(lrs) > 20:
                ax.set_yscale("log")
        if best_epoch:
            ax.axvline(best_epoch, color="green", linestyle="--", linewidth=1, label=f"best epoch ({best_epoch})")
        if phase_change:
            ax.axvline(phase_change + 0.5, color="0.4", linestyle=":", linewidth=1.5, label="fine-tune starts")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    return data_uri(fig)


def reliability_diagram(panels: Sequence[tuple[str, dict[str, Any]]]) -> str:
    """One panel per (title, calibration summary): accuracy per confidence bin against the diagonal, with
    the bins' share of images underneath."""
    fig = Figure(figsize=(4.6 * len(panels), 4.6), layout="constrained")
    grid = fig.add_gridspec(2, len(panels), height_ratios=(3, 1))
    for n, (title, summary) in enumerate(panels):
        rel = summary["reliability"]
        edges = np.asarray(rel["edges"])
        centres, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
        acc = np.array([a if a is not None else 0.0 for a in rel["accuracy"]])
        conf = np.array([c if c is not None else 0.0 for c in rel["confidence"]])
        filled = np.array(rel["count"]) > 0
        ax = fig.add_subplot(grid[0, n])
        ax.bar(centres[filled], acc[filled], width=width * 0.95, color="C0", edgecolor="white", label="accuracy")
        ax.bar(centres[filled], (conf - acc)[filled], bottom=acc[filled], width=width * 0.95, color="C3", alpha=0.35,
               label="gap to confidence")
        ax.plot([0, 1], [0, 1], color="0.3", linestyle="--", linewidth=1, label="perfect calibration")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_ylabel("accuracy")
        ax.set_title(f"{title}\nECE {summary['ece']:.3f}, MCE {summary['mce']:.3f}, NLL {summary['nll']:.3f}",
                     fontsize=10)
        ax.legend(loc="upper left", fontsize=8)
        hist = fig.add_subplot(grid[1, n], sharex=ax)
        count = np.asarray(rel["count"], dtype=float)
        hist.bar(centres, count / max(1.0, count.sum()), width=width * 0.95, color="0.5")
        hist.set_xlabel(f"confidence ({rel['bins']} equal-width bins)")
        hist.set_ylabel("share")
    return data_uri(fig)


def regression_plots(y: np.ndarray, pred: np.ndarray, *, counts: bool, seed: int = 0) -> str:
    """Predicted vs true, residuals vs true and a Bland-Altman plot. Integer (count) targets are jittered
    sideways by up to 0.15 and every point is half transparent, so stacked points show as darker marks."""
    y, pred = np.asarray(y, dtype=float), np.asarray(pred, dtype=float)
    jitter = np.random.default_rng(seed).uniform(-0.15, 0.15, len(y)) if counts else np.zeros(len(y))
    alpha = 0.45 if len(y) <= 500 else 0.25
    fig = Figure(figsize=(14, 4.4), layout="constrained")
    low, high = float(min(y.min(), pred.min())), float(max(y.max(), pred.max()))
    pad = 0.05 * (high - low) if high > low else 0.5
    ax = fig.add_subplot(1, 3, 1)
    ax.plot([low - pad, high + pad], [low - pad, high + pad], color="0.4", linestyle="--", linewidth=1, label="y = x")
    ax.scatter(y + jitter, pred, s=16, alpha=alpha, edgecolors="none")
    ax.set_xlim(low - pad, high + pad)
    ax.set_ylim(low - pad, high + pad)
    ax.set_aspect("equal", adjustable="box")
    ax.set(xlabel="true" + (" (jittered ±0.15)" if counts else ""), ylabel="predicted", title="Predicted vs true")
    ax.legend(loc="upper left", fontsize=8)
    residual = pred - y
    ax = fig.add_subplot(1, 3, 2)
    ax.axhline(0, color="0.4", linestyle="--", linewidth=1)
    ax.scatter(y + jitter, residual, s=16, alpha=alpha, edgecolors="none")
    ax.set(xlabel="true", ylabel="predicted - true", title="Residuals vs true")
    mean, bias, sd = (pred + y) / 2, float(residual.mean()), float(residual.std(ddof=1)) if len(y) > 1 else 0.0
    ax = fig.add_subplot(1, 3, 3)
    ax.scatter(mean, residual, s=16, alpha=alpha, edgecolors="none")
    ax.axhline(bias, color="C3", linewidth=1.2, label=f"bias {bias:+.3g}")
    for sign in (-1, 1):
        ax.axhline(bias + sign * 1.96 * sd, color="C3", linestyle="--", linewidth=1,
                   label=f"limits of agreement {bias - 1.96 * sd:+.3g} to {bias + 1.96 * sd:+.3g}" if sign > 0 else None)
    ax.set(xlabel="mean of predicted and true", ylabel="predicted - true", title="Bland-Altman")
    ax.legend(loc="upper left", fontsize=8)
    for axis in fig.axes:
        axis.grid(True, alpha=0.3)
    return data_uri(fig)
