"""The report's "On another source" section: for each evaluation of the run on another source
(``eval/<name>/metrics.json`` with a ``shift`` block, written by ``plantpheno evaluate RUN --data``), the figures of
the shift and the other source's worst errors with their Grad-CAM maps."""

from __future__ import annotations

import json
from typing import Any

from torch import nn

from plantpheno.files.csvfile import read_csv
from plantpheno.evaluation import report_gallery as gallery
from plantpheno.evaluation import report_sections as sections
from plantpheno.run.folder import EVAL_DIR, RunDir


def other_sources(run: RunDir, *, model: nn.Module, meta: dict[str, Any], worst: int) -> str:
    """The section, or nothing when the run was not evaluated on another source."""
    found = []
    folder = run.path / EVAL_DIR
    for path in sorted(folder.glob("*/metrics.json")) if folder.is_dir() else []:
        metrics = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(metrics, dict) and "shift" in metrics:
            found.append(metrics)
    if not found:
        return ""
    intro = ("<p>The model's best weights on images from another source (another place, camera or dataset), "
             "labels mapped to the run's classes by a class map. The drop is the in-source test figure minus this "
             "one; its interval comes from resampling both evaluations. Labels the map leaves out are expected to "
             "be unknown: the run has no class for them.</p>")
    return sections.section("other-sources", "On another source",
                            intro + "".join(_one(run, m, model=model, meta=meta, worst=worst) for m in found))


def _one(run: RunDir, m: dict[str, Any], *, model: nn.Module, meta: dict[str, Any], worst: int) -> str:
    src, shift = m["source"], m["shift"]
    ci = m.get("confidence_interval") or {}
    f1 = shift.get("macro_f1_interval") or {}
    rows = [["accuracy", m.get("accuracy"), _interval(ci)], ["macro-F1", m.get("macro_f1"), _interval(f1)]]
    for key, label in (("accuracy", "drop in accuracy"), ("macro_f1", "drop in macro-F1")):
        drop = (shift.get("drop") or {}).get(key)
        if drop:
            rows.append([f"{label} (from {drop['in_source']:.4f} in source)", drop["drop"], _interval(drop)])
    cal = shift["calibration"]
    rows.append(["ECE, raw softmax", cal["ece_before"]["estimate"], _interval(cal["ece_before"])])
    if cal.get("ece_after"):
        rows.append([f"ECE after the run's temperature (T = {cal['temperature']:.3g}, fitted on in-source val)",
                     cal["ece_after"]["estimate"], _interval(cal["ece_after"])])
    rows.append(["images expected unknown (labels without a run class)",
                 f"{src['unmapped']} of {src['images']} ({src['unmapped_fraction']:.1%})", ""])
    sep = m.get("separability") or {}
    if sep.get("accuracy") is not None:
        rows.append(["border classifier telling the sources apart", sep["accuracy"],
                     f"95 % CI {sep['ci95'][0]:.3f} to {sep['ci95'][1]:.3f}; majority {sep['majority']:.3f}"])
    body = (f"<h3>{sections.esc(m['split'])}: {sections.esc(src['data'])} ({src['mapped']} images with a run "
            f"class)</h3>" + sections.table(["figure", "value", "interval"], rows))
    if shift.get("per_class"):
        body += "<h4>Per-class recall, in source and here</h4>" + sections.table(
            ["class", "in source", "here", "drop", "interval", "images here"],
            [[r["class"], r["in_source"], r["source"], r["drop"], _interval(r), r["source_images"]]
             for r in shift["per_class"]])
    return body + _worst(run, m, model=model, meta=meta, worst=worst)


def _worst(run: RunDir, m: dict[str, Any], *, model: nn.Module, meta: dict[str, Any], worst: int) -> str:
    path = run.eval(m["split"]).predictions
    if worst < 1 or not path.is_file():
        return ""
    with read_csv(path) as reader:
        rows = list(reader)
    bad, _ = gallery.classification_examples(rows, m["class_names"], worst=worst)
    if not bad:
        return "<p>No errors on this source.</p>"
    device = next(model.parameters()).device
    tiles = gallery.render(bad, model, image_size=int(meta["image_size"]), mean=meta["mean"], std=meta["std"],
                           device=device, resize=str(meta.get("resize", "crop")))
    return ("<h4>Worst errors here, with the Grad-CAM map of the predicted class</h4>"
            + gallery.tiles_html(tiles, sections.esc))


def _interval(ci: dict[str, Any]) -> str:
    if ci.get("low") is None:
        return ""
    level = ci.get("confidence")
    return (f"{level:.0%} CI " if level else "") + f"{ci['low']:.4f} to {ci['high']:.4f}"
