"""``RUN_DIR/report.html``: one self-contained page per evaluated split that a plant scientist can open or mail
(``report.html`` for the test split, ``report_<split>.html`` for another, so no split's report replaces another's).

Everything it shows comes from the run's own files (config, environment, dataset fingerprint, metrics
log, ``eval/<split>/metrics.json`` and ``predictions.csv``, ``temperature.json``, ``data_check.json``)
plus Grad-CAM maps computed with the model. Images are inline data URIs; the page has no script, and
its Content-Security-Policy allows nothing but inline styles and ``data:`` images, so opening it makes
no network request at all.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from plantpheno.version import __version__
from plantpheno.files.atomic import atomic_write_text
from plantpheno.files.csvfile import read_csv
from plantpheno.run.epochlog import read_epoch_log
from plantpheno.errors import RunDirError
from plantpheno.evaluation import report_figures as figures
from plantpheno.evaluation import report_gallery as gallery
from plantpheno.evaluation import report_sections as sections
from plantpheno.evaluation import report_source
from plantpheno.evaluation.band_importance import read_band_importance
from plantpheno.evaluation.band_view import BandView
from plantpheno.evaluation.report_bands import bands_section
from plantpheno.records.evaluation import Evaluation, read_evaluation
from plantpheno.records.model_meta import ModelMeta
from plantpheno.evaluation.report_unknown import read_unknowns, unknown_section
from plantpheno.reporting import Reporter
from plantpheno.run.folder import RunDir

CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'none'; connect-src 'none'; "
       "font-src 'none'; object-src 'none'; base-uri 'none'; form-action 'none'")

CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0 auto;max-width:1180px;padding:16px;
color:#1d1d1d;background:#fff}
h1{font-size:22px;margin:4px 0}h2{font-size:18px;border-bottom:1px solid #ddd;padding-bottom:3px;margin-top:28px}
h3{font-size:14px;margin:8px 0 4px}
.alert{background:#fdecea;border:2px solid #c62828;color:#7f1212;padding:10px 14px;border-radius:6px;margin:10px 0}
table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #ddd;padding:3px 7px;text-align:left;
vertical-align:top}th{background:#f5f5f5}table.num td{text-align:right}table.num td:first-child{text-align:left}
table.kv th{width:200px}table.confusion td{text-align:center;min-width:26px;font-size:12px}
table.confusion th{font-size:12px;white-space:nowrap}.cm{display:inline-block;margin-right:18px;vertical-align:top}
figure.plot{margin:6px 0}figure.plot img{max-width:100%;height:auto}
.gallery{display:flex;flex-wrap:wrap;gap:10px}.tile{margin:0;padding:6px;border:1px solid #ddd;border-radius:5px;
width:262px}.tile img{margin-right:2px}.tile figcaption{font-size:12px}.tile.bad figcaption{color:#a11}
.tile.label{width:140px}.file{color:#666;word-break:break-all}.missing{width:258px;height:128px;background:#eee;font-size:12px}
.sev-error{color:#b71c1c;font-weight:bold}.sev-warning{color:#a15c00}.files{font-size:12px;word-break:break-all}
nav a{margin-right:10px}.muted{color:#666;font-size:12px}
"""


def write_run_report(run: RunDir, split: str, *, model: nn.Module, meta: ModelMeta) -> Path:
    """Write the report of the evaluation of ``split`` (``RUN_DIR/report.html`` for test,
    ``report_<split>.html`` otherwise) and return its path.

    ``model`` (the evaluated weights) draws the Grad-CAM maps; ``meta`` is the checkpoint's metadata
    (image size, normalisation)."""
    metrics_path = run.eval(split).metrics
    if not metrics_path.is_file():
        raise RunDirError(f"{run.path} has no evaluation of the {split} split ({metrics_path} is missing); run "
                          f"`plantpheno evaluate {run.path} --split {split}` first")
    page = _page(run, split, read_evaluation(metrics_path), model=model, meta=meta)
    path = run.report_for(split)
    atomic_write_text(path, page)
    return path


def write_report_or_warn(run: RunDir, split: str, *, model: nn.Module, meta: ModelMeta,
                         reporter: Reporter) -> Path | None:
    """The report at the end of ``train``/``evaluate``: a failure warns (the evaluation stands) and says how
    to retry."""
    reporter.info(f"writing the {split} split's report ({run.report_for(split).name}): figures and the Grad-CAM maps "
                  f"of its example images")
    try:
        path = write_run_report(run, split, model=model, meta=meta)
    except Exception as exc:  # noqa: BLE001 - the evaluation is written; the report can be rebuilt
        reporter.warning(f"writing {run.report_for(split)} failed ({type(exc).__name__}: {exc}); rebuild it with "
                         f"`plantpheno report {run.path} --split {split}`")
        return None
    reporter.info(f"report: {path} ({path.stat().st_size / 1e6:.2f} MB, self-contained)")
    return path


def _page(run: RunDir, split: str, ev: Evaluation, *, model: nn.Module, meta: ModelMeta) -> str:
    config = run.read_config()
    dataset = run.read_dataset_info()
    env = _read_json(run.environment)
    status = run.read_status()
    rows = _read_csv(run.eval(split).predictions)
    check, check_problem = _data_check(run)
    parts = [sections.verdict_banner(ev),
             sections.summary(ev, config=config, dataset=dataset, warnings=sections.data_warnings(check)),
             sections.model_card(config_sha=_sha256(run.config), env=env, dataset=dataset,
                                 meta=_card_meta(meta, ev, config)),
             _curves(run, config, status, ev)]
    examples = config.evaluation.report_examples
    view = BandView.of(meta, run.split_manifest)  # a model of data.bands: its images are drawn as a composite; None for RGB
    classification = ev.task == "classification"
    if classification:
        parts += [sections.per_class(ev), sections.confusion(ev), sections.confused_pairs(ev)]
        bad, good = gallery.classification_examples(rows, ev.class_names or [], worst=examples)
    else:
        y = np.array([float(r["value"]) for r in rows])
        pred = np.array([float(r["predicted"]) for r in rows])
        counts = "dic" in ev.values
        parts += [sections.trait_metrics(ev),
                  sections.section("trait-plots", "Predictions", sections.figure(
                      figures.regression_plots(y, pred, counts=counts, seed=config.seed),
                      "predicted vs true, residuals vs true, Bland-Altman",
                      "Left: predicted vs true (y = x dashed). Middle: residuals vs true. Right: Bland-Altman, the "
                      "difference against the mean of predicted and true, with the bias and the 95 % limits of "
                      "agreement (bias ± 1.96 SD).")),
                  sections.per_value(y, pred, counts=counts)]
        bad, good = gallery.regression_examples(rows, worst=examples)
    parts.append(bands_section(read_band_importance(run), view))
    parts.append(_galleries(bad, good, model, meta, classification=classification, view=view))
    cal = ev.calibration
    if cal is not None and cal.before is not None:
        panels = [("before temperature scaling", cal.before.to_dict())] + (
            [(f"after (T = {cal.temperature:.3f})", cal.after.to_dict())] if cal.after is not None else [])
        parts.append(sections.calibration(cal, figures.reliability_diagram(panels), split=split))
    if ev.tta is not None:
        parts.append(sections.tta(ev.tta))
    if run.budget_leaderboard.is_file():  # budget mode: the candidates this run was chosen from
        parts.append(sections.budget(_read_json(run.budget_leaderboard)))
    if split == "test":  # the run's main report: how it did on other sources, too
        parts.append(report_source.other_sources(run, model=model, meta=meta, worst=examples, view=view))
    parts.append(unknown_section(read_unknowns(run, split)))
    parts.append(sections.data_check(check, check_problem))
    parts.append(_label_errors(check, meta, view))
    return _document(run, split, "".join(p for p in parts if p))


def _card_meta(meta: ModelMeta, ev: Evaluation, config: Any) -> ModelMeta:
    """The checkpoint's metadata with what the evaluation applied on top: the fitted temperature, the TTA."""
    cal = ev.calibration
    applied = cal.temperature if cal is not None and cal.after is not None else None
    return meta.as_applied(temperature=applied or 1.0, tta=config.evaluation.tta)


def _curves(run: RunDir, config: Any, status: dict[str, Any], ev: Evaluation) -> str:
    history = read_epoch_log(run.metrics_log).records  # unreadable lines: named when training resumed
    if not history:
        return sections.section("curves", "Training curves", "<p>No epoch was recorded.</p>")
    metric = config.monitor[0].split("/", 1)[-1]
    metric = metric if metric != "loss" else ("accuracy" if ev.task == "classification" else "mae")
    best = status.get("best_epoch") or ev.checkpoint_epoch
    change = fine_tune_start(history)
    uri = figures.training_curves(history, metric=metric, best_epoch=best, phase_change=change)
    note = (f"Best epoch {best} by {config.monitor[0]}" if config.training.keep == "best" else
            f"The last epoch ({best}) kept (training.keep: last: a fixed schedule, not chosen on validation)")
    if change is not None:
        note += f"; the fine-tune phase starts after epoch {change}"
    elif config.training.fine_tune.epochs > 0 and not any("phase" in r for r in history):
        note += "; this run's log does not record its phases (an earlier plantpheno), so no phase is marked"
    return sections.section("curves", "Training curves", sections.figure(uri, "training curves", note))


def fine_tune_start(history: Sequence[dict[str, Any]]) -> int | None:
    """The epoch after which the fine-tune phase began, as the run recorded it (``metrics.jsonl``'s ``phase``),
    not as configured: early stopping can end the head phase long before ``training.epochs``. None when no
    recorded epoch ran in the fine-tune phase."""
    for record in history:
        if record.get("phase") == "fine_tune" and isinstance(record.get("epoch"), int):
            return record["epoch"] - 1
    return None


def _galleries(bad: Sequence[gallery.Example], good: Sequence[gallery.Example], model: nn.Module,
               meta: ModelMeta, *, classification: bool, view: BandView | None = None) -> str:
    device = next(model.parameters()).device
    tiles = gallery.render([*bad, *good], model, image_size=meta.image_size, mean=list(meta.mean),
                           std=list(meta.std), device=device, resize=meta.resize, view=view)
    how = ("Each image as the model saw it, then its Grad-CAM map (red = most weight) for the "
           + ("predicted class on errors and the true class on correct examples" if classification
              else "predicted value (regions that raise it)") + ".")
    if view is not None:
        how += f" The images are shown as {view.description}; the maps come from all the model's bands."
    worst = ("Worst errors (by loss -log p(true class))" if classification else "Largest errors")
    body = (f"<p>{how}</p><h3>{worst}</h3>" + (gallery.tiles_html(tiles[:len(bad)], sections.esc) if bad
                                              else "<p>No errors on this split.</p>")
            + ("<h3>Correct examples, two per class (most confident)</h3>" if classification
               else "<h3>Closest predictions</h3>") + gallery.tiles_html(tiles[len(bad):], sections.esc))
    return sections.section("gallery", "Examples with Grad-CAM", body)


def _label_errors(check: dict[str, Any] | None, meta: ModelMeta, view: BandView | None = None) -> str:
    """The data check's suspected label errors as thumbnails (as the model sees them), if it found any."""
    from plantpheno.data.transforms import model_square

    found = [f for f in (check or {}).get("findings") or [] if isinstance(f, dict)
             and f.get("check") == "label_errors" and f.get("files")]
    if not found:
        return ""
    square = model_square(meta.image_size, list(meta.mean), meta.resize)
    intro = ("<p>Images whose given label a classifier on frozen pretrained features, which never saw them, finds "
             "unlikely. Its figure is how much it disagrees, not proof: look at each image and correct only the "
             "labels that are wrong.</p>")
    return sections.section("label-errors", "Suspected label errors", intro + "".join(
        gallery.label_error_html(f, square, sections.esc, load=view.picture if view is not None else None)
        for f in found))


def _document(run: RunDir, split: str, body: str) -> str:
    title = f"plantpheno report: {run.experiment}/{run.name} ({split})"
    nav = "".join(f'<a href="#{a}">{t}</a>' for a, t in (
        ("summary", "Summary"), ("card", "Model card"), ("curves", "Curves"), ("bands", "Bands"),
        ("gallery", "Examples"),
        ("calibration", "Calibration"), ("data-check", "Data check"), ("label-errors", "Label errors"))
        if f'id="{a}"' in body)
    made = time.strftime("%Y-%m-%d %H:%M")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f'<meta name="referrer" content="no-referrer"><meta name="viewport" content="width=device-width">'
            f"<title>{sections.esc(title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{sections.esc(title)}</h1><p class=\"muted\">{sections.esc(str(run.path))} · written {made} by "
            f"plantpheno {__version__} · self-contained, works offline</p><nav>{nav}</nav>{body}</body></html>\n")


def _data_check(run: RunDir) -> tuple[dict[str, Any] | None, str | None]:
    if not run.data_check.is_file():
        return None, None
    try:
        report = json.loads(run.data_check.read_text(encoding="utf-8"))
        if not isinstance(report, dict) or not isinstance(report.get("findings", []), list):
            return None, "expected an object with a findings list"
        return report, None
    except (OSError, ValueError) as exc:
        return None, f"{type(exc).__name__}: {exc}"


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with read_csv(path) as reader:  # file names that are not UTF-8 come back as surrogates, as written
        return list(reader)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "unknown"
