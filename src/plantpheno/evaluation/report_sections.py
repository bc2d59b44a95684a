"""The sections of a run's HTML report, each a function from the run's recorded values to an HTML fragment.

Every text that comes from a file (class names, paths, messages) goes through ``esc``; numbers are
formatted here. Nothing in a section fetches anything: images are data URIs made by the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

import numpy as np

from plantpheno.evaluation.card_text import INTENDED_USE, input_text, limits, output_text
from plantpheno.records.evaluation import (Calibration, CalibrationScores, Evaluation, PerClass,
                                           TestTimeAugmentation)
from plantpheno.records.model_meta import ModelMeta

def esc(value: Any) -> str:
    return escape(str(value), quote=True)


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return esc(value)


def _number(value: float | None) -> str:
    """A figure to four decimals; ``n/a`` where the evaluation could not compute it (written as null)."""
    return "n/a" if value is None else f"{value:.4f}"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], *, cls: str = "") -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c if isinstance(c, _Raw) else fmt(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


class _Raw(str):
    """HTML that a table cell takes as it is (already escaped)."""


def raw(html: str) -> _Raw:
    return _Raw(html)


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{esc(title)}</h2>{body}</section>'


# --------------------------------------------------------------------------- summary and verdict


def verdict_banner(ev: Evaluation) -> str:
    """A red box at the very top when the model does not beat its trivial baseline."""
    verdict = ev.verdict
    if ev.baseline is None or verdict is None or verdict.is_better:
        return ""
    word = "does NOT beat" if verdict.verdict == "worse" else "is not clearly better than"
    return (f'<div class="alert" role="alert"><strong>Warning: on the {esc(ev.split)} split this model '
            f'{word} its trivial baseline ({esc(ev.baseline.kind)}).</strong> {esc(verdict.text)}. Do not rely on '
            f'its predictions as they are.</div>')


def finding_brief(finding: dict[str, Any]) -> str:
    """A data-check finding (``data_check.json``) in a few words with its figure, for the summary: the border
    shortcut as its accuracy against chance (or its R²), anything else as its message's first sentence."""
    details = finding.get("details") or {}
    if finding.get("check") == "background_shortcut":
        if isinstance(details.get("r2"), (int, float)):
            return (f"the image border alone explains R² = {details['r2']:.2f} of the trait (predicting the mean: "
                    f"0)")
        if isinstance(details.get("accuracy"), (int, float)) and isinstance(details.get("chance"), (int, float)):
            return (f"the image border alone predicts {details['accuracy']:.1%} of labels (chance "
                    f"{details['chance']:.1%})")
    if finding.get("check") == "label_errors":
        return f"{finding.get('count')} image(s) look mislabelled (see Suspected label errors below)"
    message = str(finding.get("message", "")).strip()
    first = message.split(". ")[0].rstrip(".")
    return f"{finding.get('check')}: {first}"


def data_warnings(report: dict[str, Any] | None) -> list[str]:
    """Every warning- or error-level finding of the run's data check, in brief (:func:`finding_brief`)."""
    findings = (report or {}).get("findings") or []
    return [finding_brief(f) for f in findings if isinstance(f, dict) and f.get("severity") in ("error", "warning")]


def summary(ev: Evaluation, *, config: Any, dataset: dict[str, Any], warnings: Sequence[str] = ()) -> str:
    """The summary table; ``warnings`` (:func:`data_warnings`) stand next to the verdict ("better ..., but the
    image border alone predicts ..."), so no true warning waits in the last section."""
    head, ci = ev.headline_metric, ev.interval
    ci_text = (f" ({ci.confidence:.0%} CI {ci.low:.4f} to {ci.high:.4f}, percentile bootstrap, "
               f"{ci.n_resamples} resamples)" if ci is not None else " (no confidence interval)")
    counts = dataset.get("num_images") or {}
    classes = dataset.get("class_names") or ev.class_names
    what = (f"{len(classes)} classes: {', '.join(map(str, classes))}" if classes else "a numeric trait")
    items = [
        ("Task", f"{ev.task} ({what})"),
        ("Model", (f"{config.model.backbone} (pretrained: {config.model.pretrained}), checkpoint of epoch "
                  f"{ev.checkpoint_epoch}")),
        ("Data", ", ".join(f"{k} {v}" for k, v in counts.items()) + " images"),
        ("Evaluated", f"{ev.split} split, {ev.num_images} images"),
        (f"Headline: {head}", f"{_number(ev.headline)}{ci_text}"),
    ]
    base, v = ev.baseline, ev.verdict
    if base is not None and v is not None:
        items.append((f"Baseline ({base.kind})", f"{v.metric} {_number(v.baseline)}" + (
            f" (class {base.majority_class}; stratified chance {_number(base.stratified_accuracy)})"
            if base.majority_class is not None else f" (always predicting {base.value:.4g})")))
        # "better than the baseline, but ..."; a verdict that is already a warning takes "and"
        joint = "but" if v.is_better else "and"
        but = f", {joint} {'; and '.join(warnings)}" if warnings else ""
        items.append(("Verdict", f"{v.verdict}: {v.text}{but}"))
    elif warnings:  # no verdict to stand beside: the warnings get their own row, as high up
        items.append(("Data warnings", "; ".join(warnings)))
    cal = ev.calibration
    if cal is not None and cal.after is not None and cal.before is not None:
        change = cal.ece_change
        interval = (f"; change {change.estimate:+.4f}, {change.confidence:.0%} interval {change.low:+.4f} "
                    f"to {change.high:+.4f}" if change is not None and change.known else "")
        items.append(("Calibration", (f"ECE {_number(cal.before.ece)} before, {_number(cal.after.ece)} after "
                                     f"temperature scaling (T = {cal.temperature:.3f}, fitted on val{interval})")))
    if ev.tta is not None:
        items.append(("Test-time augmentation", f"{ev.tta.mode} ({len(ev.tta.views)} views): see below"))
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in items)
    return section("summary", "Summary", f'<table class="kv">{rows}</table>')


def model_card(*, config_sha: str, env: dict[str, Any], dataset: dict[str, Any], meta: ModelMeta) -> str:
    """The card of the evaluated model: ``meta`` is its checkpoint's metadata (input size, ``data.resize``, task)
    with the temperature and test-time augmentation it is evaluated with, so the card says what the model saw
    and only what applies to its task (the registry's card says the same, :mod:`~plantpheno.evaluation.card_text`)."""
    items = [
        ("Dataset fingerprint", dataset.get("fingerprint", "unknown")),
        ("Config SHA-256", config_sha),
        ("Git commit", f"{env.get('git_commit', 'unknown')} (uncommitted changes: {env.get('git_dirty')})"),
        ("Versions", (f"plantpheno {env.get('plantpheno')}, torch {env.get('torch')}, timm {env.get('timm')}, "
                     f"Python {env.get('python')}")),
        ("Trained on", f"{env.get('device')} ({env.get('gpu') or env.get('platform', '')})"),
        ("Input", input_text(meta)),
        ("Output", output_text(meta)),
        ("Intended use", INTENDED_USE),
        ("Limits", " ".join(limits(meta))),
    ]
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in items)
    return section("card", "Model card", f'<table class="kv">{rows}</table>')


def figure(uri: str, alt: str, caption: str = "") -> str:
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure class="plot"><img src="{uri}" alt="{esc(alt)}">{cap}</figure>'


# --------------------------------------------------------------------------- classification


def per_class(ev: Evaluation) -> str:
    names, pc, v = ev.class_names or [], ev.per_class or PerClass(), ev.values
    rows = [(n, pc.precision[i], pc.recall[i], pc.f1[i], pc.support[i]) for i, n in enumerate(names)]
    rows += [(f"{avg} avg", *(v.get(f"{avg}_{k}") for k in ("precision", "recall", "f1")), ev.num_samples)
             for avg in ("macro", "weighted")]
    return section("per-class", "Per class", table(("class", "precision", "recall", "F1", "support"), rows,
                                                   cls="num"))


def confusion(ev: Evaluation) -> str:
    names, cm = ev.class_names or [], np.asarray(ev.confusion_matrix)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)

    def grid(values: np.ndarray, label: str, as_percent: bool) -> str:
        head = "".join(f'<th title="{esc(n)}">{i + 1}</th>' for i, n in enumerate(names))
        body = []
        for i, name in enumerate(names):
            cells = []
            for j in range(len(names)):
                s = share[i, j]
                colour = f"rgba(31,119,180,{s:.2f})" if i == j else f"rgba(214,39,40,{min(1.0, 2 * s):.2f})"
                text = (f"{100 * values[i, j]:.0f}" if as_percent else str(int(values[i, j]))) if cm[i, j] else ""
                cells.append(f'<td style="background:{colour}">{text}</td>')
            body.append(f'<tr><th>{i + 1}. {esc(name)}</th>{"".join(cells)}</tr>')
        return (f'<div class="cm"><h3>{esc(label)}</h3><table class="confusion"><thead><tr><th>true \\ predicted'
                f'</th>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>')

    return section("confusion", "Confusion matrix", grid(cm, "Counts", False) + grid(share, "Row-normalised (% of the "
                                                                                           "true class)", True))


def confused_pairs(ev: Evaluation, *, top: int = 10) -> str:
    names, cm = ev.class_names or [], np.asarray(ev.confusion_matrix)
    off = [(int(cm[i, j]), i, j) for i in range(len(names)) for j in range(len(names)) if i != j and cm[i, j]]
    off.sort(key=lambda t: (-t[0], t[1], t[2]))
    if not off:
        return section("pairs", "Most-confused pairs", "<p>No errors on this split.</p>")
    support = cm.sum(axis=1)
    rows = [(names[i], names[j], c, f"{c / support[i]:.1%}") for c, i, j in off[:top]]
    return section("pairs", "Most-confused pairs", table(("true class", "predicted as", "images", "share of true class"),
                                                         rows))


def calibration(cal: Calibration, diagram_uri: str, *, split: str) -> str:
    keys = ("ece", "mce", "brier", "nll", "mean_confidence", "accuracy")
    rows = [("before (T = 1)", *(cal.before or CalibrationScores()).row())]
    if cal.after is not None:
        rows.append((f"after (T = {cal.temperature:.3f})", *cal.after.row()))
    change = cal.ece_change
    if change is not None and change.known:
        rows.append(((f"change of ECE by scaling: {change.estimate:+.4f} ({change.confidence:.0%} bootstrap "
                     f"interval {change.low:+.4f} to {change.high:+.4f})"), *([None] * len(keys))))
    note = (f"<p>{esc(cal.binning)}. ECE: bin-weighted mean |accuracy - confidence|; MCE: the largest gap; Brier: "
            "mean squared error of the probability vector (0 best, 2 worst); NLL: mean -log p(true class). "
            + ("The temperature was fitted on the validation split; it changes confidences, never the class."
               if cal.after is not None else f"Temperature scaling was not applied: {esc(cal.not_applied)}."
               if cal.not_applied else "Temperature scaling is off (evaluation.temperature_scaling).")
            + (" This is the split it was fitted on, so the figures after scaling are optimistic."
               if cal.after is not None and split == "val" else "") + "</p>")
    return section("calibration", "Calibration", table(("probabilities", "ECE", "MCE", "Brier", "NLL",
                                                        "mean confidence", "accuracy"), rows) + note
                   + figure(diagram_uri, "reliability diagram"))


def tta(block: TestTimeAugmentation) -> str:
    rows = [(label, *scores.values()) for label, scores in block.rows()]
    keys = list(block.with_ or {})
    body = table(("split", *keys), rows) + (f"<p>Views: {esc(', '.join(block.views))}; raw outputs averaged. "
                                            "Decide on TTA from the validation rows.</p>")
    return section("tta", "Test-time augmentation", body)


def budget(board: dict[str, Any]) -> str:
    """Budget mode's leaderboard (``budget_leaderboard.json``): every candidate's validation score and seconds,
    the rule fixed before the first one ran, and the choice."""
    metric = board["metric"]
    # a candidate stopped at its deadline: its note says whether it was scored on what it reached (cut) or dropped
    rows = [(c["rung"], c["name"] + (" (chosen)" if c["name"] == board.get("chosen") else ""),
             c.get("note") or c["status"] if c["status"] in ("cut", "dropped") else c["status"],
             None if c.get("score") is None else f"{fmt(c['score'])} ± {fmt(c.get('se'))}",
             len(c.get("folds") or []) or "", None if c.get("seconds") is None else f"{c['seconds']:.0f}",
             c.get("reason", "")) for c in board["candidates"]]
    folds = board.get("folds", 1)
    scored = (f"group {folds}-fold cross-validation on train+val (mean ± standard error over folds)" if folds > 1
              else "the validation split (± the standard error from its bootstrap interval)")
    note = (f"<p>Budget {board['budget_s']:.0f} s, used {board['elapsed_s']:.0f} s. Candidates were scored on "
            f"{esc(scored)}; none was evaluated on the test split. Rule, fixed before the first candidate: "
            f"{esc(board['rule'])}. The chosen candidate was then trained as this run; its test figures above are "
            f"its only test evaluation"
            + (f"; it trained {board['final_epochs']} of its {board['final_planned_epochs']} planned epochs, stopped "
               f"before an epoch that would have ended past the budget" if board.get("final_cut") else "")
            + ".</p>")
    return section("budget", "Budget mode: candidates", table(
        ("rung", "candidate", "status", f"val {metric}", "folds", "seconds", "why on the ladder"), rows) + note)


# --------------------------------------------------------------------------- traits


def round_half_away(values: np.ndarray) -> np.ndarray:
    return np.sign(values) * np.floor(np.abs(values) + 0.5)


def per_value(y: np.ndarray, pred: np.ndarray, *, counts: bool) -> str:
    """Errors per true value (counts) or per decile of the true value (continuous traits)."""
    if counts:
        groups = [(f"{v:g}", y == v) for v in np.unique(y)]
        header = ("true count", "images", "MAE", "bias", "exact", "within one")
    else:
        edges = np.unique(np.quantile(y, np.linspace(0, 1, 11)))
        which = np.clip(np.searchsorted(edges, y, side="right") - 1, 0, max(0, len(edges) - 2))
        groups = [(f"{edges[k]:.3g} to {edges[k + 1]:.3g}", which == k) for k in range(max(1, len(edges) - 1))]
        header = ("true value", "images", "MAE", "bias")
    rows = []
    for label, mask in groups:
        if not mask.any():
            continue
        e = pred[mask] - y[mask]
        row = [label, int(mask.sum()), float(np.abs(e).mean()), float(e.mean())]
        if counts:
            d = np.abs(round_half_away(pred[mask]) - y[mask])
            row += [f"{(d == 0).mean():.0%}", f"{(d <= 1).mean():.0%}"]
        rows.append(row)
    title = "Per true count" if counts else "Per decile of the true value"
    return section("per-value", title, table(header, rows, cls="num"))


def trait_metrics(ev: Evaluation) -> str:
    values = ev.values
    keys = [k for k in ("mae", "rmse", "r2", "mean_error", "dic", "abs_dic", "count_accuracy") if k in values]
    base = ev.baseline
    rows = [("model", *(values[k] for k in keys))]
    if base is not None:
        rows.append((f"baseline ({base.kind} {base.value:.4g})", *(base.score(k) for k in keys)))
    labels = {"mae": "MAE", "rmse": "RMSE", "r2": "R²", "mean_error": "bias", "dic": "DiC", "abs_dic": "|DiC|",
              "count_accuracy": "exact count"}
    note = ("<p>DiC (CVPPP): mean of round(predicted) - true; |DiC| its absolute value per image; exact count: "
            "share with round(predicted) = true.</p>" if "dic" in values else "")
    return section("trait", "Trait metrics", table(("", *(labels[k] for k in keys)), rows) + note)


# --------------------------------------------------------------------------- data check


def data_check(report: dict[str, Any] | None, problem: str | None) -> str:
    if problem:
        return section("data-check", "Data check", f"<p>data_check.json could not be read: {esc(problem)}</p>")
    if report is None:
        return ""
    s = report.get("summary") or {}
    findings = report.get("findings") or []
    head = f"<p>{int(s.get('errors', 0))} error(s), {int(s.get('warnings', 0))} warning(s).</p>"
    rows = []
    for f in findings:
        groups = f.get("files") or []
        shown = "; ".join(" ↔ ".join(map(str, g)) for g in groups[:5]) + (
            f" (and {len(groups) - 5} more)" if len(groups) > 5 else "")
        sev = str(f.get("severity", ""))
        rows.append((raw(f'<span class="sev-{esc(sev)}">{esc(sev)}</span>'), f.get("check", ""), f.get("message", ""),
                     f.get("count", ""), f.get("fix", ""), raw(f'<span class="files">{esc(shown)}</span>')))
    body = head + (table(("severity", "check", "finding", "count", "fix", "files"), rows) if rows else "")
    return section("data-check", "Data check", body)
