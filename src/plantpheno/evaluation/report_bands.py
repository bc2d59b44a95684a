"""The report's "Bands" section for a model of ``data.bands``: which bands it sees, the band-importance table
(``band_importance.json``, :mod:`plantpheno.evaluation.band_importance`) and which colour composite the report's
images are drawn as (:mod:`plantpheno.evaluation.band_view`)."""

from __future__ import annotations

from typing import Any

from plantpheno.evaluation.band_view import BandView
from plantpheno.evaluation.report_sections import esc, raw, section, table
from plantpheno.records.evaluation import Interval


def bands_section(record: dict[str, Any] | None, view: BandView | None) -> str:
    """The section, or nothing for an RGB model (``view`` None)."""
    if view is None:
        return ""
    names = ", ".join(view.input.norm.names)
    parts = [f"<p>The model sees {len(view.input.norm.names)} bands: {esc(names)}. Each is clipped to its "
             f"training 1st to 99th percentile and standardised by the training split's mean and standard "
             f"deviation.</p>",
             f"<p>Images in this report are shown as {esc(view.description)}; the Grad-CAM maps are computed on "
             f"all the bands the model reads.</p>"]
    parts.append(_importance(record) if record is not None else
                 "<p>No band importance was measured for this run (no band_importance.json: it is written at the "
                 "end of <code>plantpheno train</code>, on the validation split).</p>")
    return section("bands", "Bands", "".join(parts))


def _importance(record: dict[str, Any]) -> str:
    metric, base = record["metric"], Interval.model_validate(record["baseline"])
    worse = "falls" if record["direction"] == "max" else "rises"
    intro = (f"<h3>Which bands matter</h3><p>How much the {esc(metric)} on the {esc(record['split'])} split "
             f"({record['num_images']} images) {worse} when one band is replaced by {esc(record['replacement'])}. "
             f"{esc(metric)} with every band: {base.estimate:.4f}{_ci(base, signed=False)}. A positive drop means the model "
             f"relies on the band; an interval that includes 0 gives no evidence that it does. Derived bands "
             f"(such as ndvi) count as bands: replacing one leaves the bands it is computed from. Measured on "
             f"validation, never on test, so a choice of bands made from it leaves the test figure honest.</p>")
    drops = [Interval.model_validate(r["drop"]) for r in record["bands"]]
    # the metric without a band as precisely as the one with every band: a drop of 0.02 in an MAE of 15.9 (a trait
    # in %) is invisible at three significant digits
    rows = [[r["rank"], r["band"], raw(f"{r['value']:.4f}"), raw(f"{drop.estimate:+.4f}"), _ci(drop).strip(" ()")]
            for r, drop in zip(record["bands"], drops)]
    header = ["rank", "band", f"{metric} without it", "drop (positive: worse)", "interval (paired bootstrap)"]
    return intro + table(header, rows, cls="num")


def _ci(interval: Interval, *, signed: bool = True) -> str:
    """The interval in words: a drop's signed (it may straddle 0), the metric's own not."""
    if not interval.known:
        return " (no interval: evaluation.bootstrap_samples = 0)"
    number = "{:+.4f}" if signed else "{:.4f}"
    return (f" ({interval.confidence:.0%} CI {number.format(interval.low)} to {number.format(interval.high)}, "
            f"{interval.n_resamples} resamples)")
