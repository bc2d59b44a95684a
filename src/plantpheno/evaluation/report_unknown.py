"""The report's "Unknown images and abstention" section: the OOD detector's flags on the split, and selective
prediction (the risk-coverage curve and the confidence threshold chosen on validation for a target accuracy), from
``eval/<split>/unknown.json`` (written by :mod:`plantpheno.training.unknowns`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from plantpheno.evaluation.report_figures import data_uri
from plantpheno.evaluation.report_sections import esc, figure, section, table
from plantpheno.run.folder import RunDir

UNKNOWN_FILE = "unknown.json"  # in eval/<split>/


def unknown_path(run: RunDir, split: str) -> Path:
    """``eval/<split>/unknown.json``: the detector's flags and selective prediction on that split."""
    return run.eval(split).metrics.parent / UNKNOWN_FILE


def read_unknowns(run: RunDir, split: str) -> dict[str, Any] | None:
    """``eval/<split>/unknown.json``, or None when the evaluation wrote none (no detector)."""
    path = unknown_path(run, split)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _interval(values: list[float] | None) -> str:
    return f"{values[0]:.1%} to {values[1]:.1%}" if values else "n/a"


def risk_coverage_figure(curve: dict[str, Any], *, threshold_coverage: float | None) -> str:
    """The risk-coverage curve as an image data URI."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.0, 3.2), dpi=100)
    ax = fig.add_subplot()
    ax.plot(curve["coverage"], curve["risk"], color="#2a6f4e")
    if threshold_coverage is not None:
        ax.axvline(threshold_coverage, color="#b03a2e", linestyle="--", linewidth=1,
                   label="threshold chosen on val")
        ax.legend(loc="upper left", fontsize=8)
    ax.set_xlabel("coverage (fraction of images answered)")
    ax.set_ylabel("error among answered images")
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    fig.tight_layout()
    return data_uri(fig)


def unknown_section(block: dict[str, Any] | None) -> str:
    """The section, or "" when the evaluation has no detector."""
    if not block:
        return ""
    det = block["detector"]
    rows = [("flagged unknown", f"{block['unknown']} of {block['num_images']}",
             f"{block['unknown_fraction']:.1%}" if block["unknown_fraction"] is not None else "n/a",
             _interval(block.get("unknown_interval")))]
    parts = [f"<p>Score: <b>{esc(det['score'])}</b>; an image whose score passes {det['threshold']:.4g} is flagged "
             f"unknown. The threshold keeps {det['val_kept']:.1%} of the {det['num_val_images']} validation images "
             f"(evaluation.ood.keep = {det['keep']:.0%}); it and the score were fixed on train/val only.</p>",
             table(("", "images", "fraction", "95 % interval (Wilson)"), rows)]
    if block.get("known_accuracy") is not None or block.get("unknown_accuracy") is not None:
        parts.append(f"<p>Accuracy on the images kept as known: {_pct(block.get('known_accuracy'))}; on those "
                     f"flagged unknown: {_pct(block.get('unknown_accuracy'))}.</p>")
    sel = block.get("selective")
    if sel:
        parts.append(_selective(sel))
    return section("unknown", "Unknown images and abstention", "".join(parts))


def _pct(value: float | None) -> str:
    return f"{value:.1%}" if value is not None else "n/a"


def _selective(sel: dict[str, Any]) -> str:
    text = (f"<p>Selective prediction: answer only when the (temperature-scaled) confidence is at least the threshold "
            f"chosen on the validation split for {sel['target_accuracy']:.1%} accuracy "
            f"(evaluation.selective.target_accuracy). ")
    if sel.get("threshold") is None:
        text += esc(sel.get("note", "")) + "</p>"
    else:
        text += (f"Threshold {sel['threshold']:.4f}: on this split it answers {sel['kept']} of {sel['num_images']} "
                 f"images (coverage {_pct(sel['coverage'])}, interval {_interval(sel['coverage_interval'])}) with "
                 f"accuracy {_pct(sel['accuracy'])} (interval {_interval(sel['accuracy_interval'])}).</p>")
    curve = sel.get("curve") or {}
    if curve.get("coverage"):
        text += figure(risk_coverage_figure(curve, threshold_coverage=sel.get("coverage")), "risk-coverage curve",
                       f"Risk-coverage curve: the error among the images answered as the confidence threshold rises "
                       f"(AURC {curve['aurc']:.4f}; lower is better).")
    return text
