"""The report's "On another source" section: for each evaluation of the run on another source
(``eval/<name>/metrics.json`` with a ``shift`` block, written by ``plantpheno evaluate RUN --data``), the figures of
the shift and the other source's worst errors with their Grad-CAM maps."""

from __future__ import annotations

from typing import Any

from torch import nn

from plantpheno.evaluation.band_view import BandView
from plantpheno.files.csvfile import read_csv
from plantpheno.evaluation import report_gallery as gallery
from plantpheno.evaluation import report_sections as sections
from plantpheno.records.evaluation import Evaluation, Interval, Share, Unknowns, read_evaluation
from plantpheno.records.model_meta import ModelMeta
from plantpheno.run.folder import EVAL_DIR, RunDir


def other_sources(run: RunDir, *, model: nn.Module, meta: ModelMeta, worst: int,
                  view: BandView | None = None) -> str:
    """The section, or nothing when the run was not evaluated on another source."""
    found = []
    folder = run.path / EVAL_DIR
    for path in sorted(folder.glob("*/metrics.json")) if folder.is_dir() else []:
        evaluation = read_evaluation(path)
        if evaluation.is_other_source:
            found.append(evaluation)
    if not found:
        return ""
    intro = ("<p>The model's best weights on images from another source (another place, camera or dataset), "
             "labels mapped to the run's classes by a class map. The drop is the in-source test figure minus this "
             "one; its interval comes from resampling both evaluations. Labels the map leaves out are expected to "
             "be unknown: the run has no class for them. The run's OOD detector (fitted on its own train/val "
             "images) scores every image here: the share it flags unknown, and how far its score tells these "
             "images from the in-source test images (AUROC 0.5: alike; 1: apart).</p>")
    return sections.section("other-sources", "On another source",
                            intro + "".join(_one(run, m, model=model, meta=meta, worst=worst, view=view) for m in found))


def _one(run: RunDir, m: Evaluation, *, model: nn.Module, meta: ModelMeta, worst: int, view: BandView | None) -> str:
    src, shift = m.source or {}, m.shift or {}
    rows = [["accuracy", m.value("accuracy"), _interval(m.confidence_interval)],
            ["macro-F1", m.value("macro_f1"), _interval(shift.get("macro_f1_interval"))]]
    for key, label in (("accuracy", "drop in accuracy"), ("macro_f1", "drop in macro-F1")):
        drop = (shift.get("drop") or {}).get(key)
        if drop:
            rows.append([f"{label} (from {drop['in_source']:.4f} in source)", drop["drop"], _interval(drop)])
    shift_cal = shift["calibration"]
    rows.append(["ECE, raw softmax", shift_cal["ece_before"]["estimate"], _interval(shift_cal["ece_before"])])
    if shift_cal.get("ece_after"):
        rows.append([f"ECE after the run's temperature (T = {shift_cal['temperature']:.3g}, fitted on in-source "
                     f"val)", shift_cal["ece_after"]["estimate"], _interval(shift_cal["ece_after"])])
    own = shift_cal.get("source_temperature")
    if own is not None and own["applied"]:
        rows.append([f"ECE after the source's temperature (T = {own['temperature']:.3g}, fitted on {own['num_images']} "
                     f"labelled images of {own['fitted_on']})", own["ece_after"]["estimate"],
                     _interval(own["ece_after"])])
    elif own is not None:
        rows.append(["ECE after the source's temperature", "not fitted", own["not_applied"]])
    rows.append(["images expected unknown (labels without a run class)",
                 f"{src['unmapped']} of {src['images']} ({src['unmapped_fraction']:.1%})", ""])
    rows += _unknown_rows(m.unknowns)
    sep = m.separability or {}
    if sep.get("accuracy") is not None:
        rows.append(["border classifier telling the sources apart", sep["accuracy"],
                     f"95 % CI {sep['ci95'][0]:.3f} to {sep['ci95'][1]:.3f}; majority {sep['majority']:.3f}"])
    body = (f"<h3>{sections.esc(m.split or '')}: {sections.esc(src['data'])} ({src['mapped']} images with a run "
            f"class)</h3>" + sections.table(["figure", "value", "interval"], rows))
    if shift.get("per_class"):
        body += "<h4>Per-class recall, in source and here</h4>" + sections.table(
            ["class", "in source", "here", "drop", "interval", "images here"],
            [[r["class"], r["in_source"], r["source"], r["drop"], _interval(r), r["source_images"]]
             for r in shift["per_class"]])
    return body + _worst(run, m, model=model, meta=meta, worst=worst, view=view)


def _worst(run: RunDir, m: Evaluation, *, model: nn.Module, meta: ModelMeta, worst: int, view: BandView | None) -> str:
    if worst < 1 or m.split is None or not m.class_names or not run.eval(m.split).predictions.is_file():
        return ""
    with read_csv(run.eval(m.split).predictions) as reader:
        rows = list(reader)
    bad, _ = gallery.classification_examples(rows, m.class_names, worst=worst)
    if not bad:
        return "<p>No errors on this source.</p>"
    device = next(model.parameters()).device
    tiles = gallery.render(bad, model, image_size=meta.image_size, mean=list(meta.mean), std=list(meta.std),
                           device=device, resize=meta.resize, view=view)
    return ("<h4>Worst errors here, with the Grad-CAM map of the predicted class</h4>"
            + gallery.tiles_html(tiles, sections.esc))


def _unknown_rows(unknowns: Unknowns | None) -> list[list[Any]]:
    """The run's OOD detector on this source: the share flagged, accuracy on kept and flagged images, and how far
    its score tells this source from the in-source test split."""
    if unknowns is None:
        return [["flagged unknown", "the run has no OOD detector (plantpheno evaluate RUN --fit-unknowns fits one)",
                 ""]]
    what = f"by the OOD detector ({unknowns.score}, threshold fitted on train/val to keep {unknowns.keep:.0%})"
    rows: list[list[Any]] = []
    for label, share in ((f"flagged unknown {what}", unknowns.flagged),
                         ("accuracy on the images kept as known", unknowns.known_accuracy),
                         ("accuracy on the images flagged unknown", unknowns.unknown_accuracy),
                         ("images without a run class flagged unknown", unknowns.expected_unknown_flagged)):
        if share is not None:
            rows.append([label, f"{share.count} of {share.num_images} ({share.fraction or 0:.1%})", _share(share)])
    sep = unknowns.separation
    if sep is not None:
        rows.append([f"OOD score AUROC, in-source test ({sep.num_in_source}) vs this source ({sep.num_other}): how "
                     f"different it looks", sep.auroc.estimate, _interval(sep.auroc)])
        rows.append(["FPR at 95 % TPR (this source's images kept as known)", sep.fpr95.estimate,
                     _interval(sep.fpr95)])
    elif unknowns.no_separation:
        rows.append(["OOD score AUROC against the in-source test split", unknowns.no_separation, ""])
    return rows


def _share(share: Share) -> str:
    if share.low is None or share.high is None:
        return ""
    return f"{share.confidence:.0%} CI {share.low:.1%} to {share.high:.1%} ({share.method})"


def _interval(span: Interval | dict[str, Any] | None) -> str:
    """An interval in words; ``span`` an :class:`Interval` or one of the shift's mappings with ``low``/``high``."""
    found = Interval.model_validate(span) if isinstance(span, dict) else span
    if found is None or not found.known:
        return ""
    level = f"{found.confidence:.0%} CI " if "confidence" in found.model_fields_set else ""  # per-class rows: none
    return level + f"{found.low:.4f} to {found.high:.4f}"
