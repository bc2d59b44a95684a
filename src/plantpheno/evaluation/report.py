"""Writing an evaluation: metrics.json, reports, plots and per-image predictions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from plantpheno.files.atomic import atomic_write_text
from plantpheno.files.csvfile import write_csv
from plantpheno.evaluation.metrics import (
    METRIC_FUNCTIONS,
    bootstrap_ci,
    classification_metrics,
    format_classification_report,
    regression_metrics,
    rounded_counts,
)
from plantpheno.evaluation.plots import plot_confusion_matrix, plot_predicted_vs_true
from plantpheno.records.evaluation import Evaluation, build_evaluation
from plantpheno.run.folder import EvalDir
from plantpheno.tasks import task_metrics


def write_evaluation(out: EvalDir, *, targets: np.ndarray, outputs: np.ndarray, paths: Sequence[Path],
                     class_names: list[str] | None, bootstrap_samples: int, confidence: float,
                     seed: int, extra: dict[str, Any] | None = None,
                     columns: Mapping[str, Sequence[str]] | None = None) -> Evaluation:
    """Compute metrics for one split and write every report file into ``out``; return the evaluation.

    The trivial baseline and the verdict on it come in ``extra["baseline"]``
    (:mod:`plantpheno.evaluation.run_eval`). ``columns``: more per-image columns of a classifier's
    ``predictions.csv`` (name: one value per image, such as the OOD score and flag of another source's images).
    """
    out.path.mkdir(parents=True, exist_ok=True)
    if class_names is not None:
        metrics = _classification(out, targets.astype(int), outputs, paths, class_names, columns or {})
        task = "classification"
        predicted = outputs.argmax(axis=1)
    else:
        metrics = _regression(out, targets.astype(float), outputs.astype(float), paths)
        task = "regression"
        predicted = outputs
    headline = task_metrics(task).headline
    if bootstrap_samples > 0:
        ci = bootstrap_ci(METRIC_FUNCTIONS[headline], targets, predicted, n_resamples=bootstrap_samples,
                          confidence=confidence, seed=seed)
        metrics["confidence_interval"] = {"metric": headline, **ci}
    evaluation = build_evaluation(task=task, headline_metric=headline, metrics=metrics, extra=extra)
    atomic_write_text(out.metrics, evaluation.to_json())
    return evaluation


def _classification(out: EvalDir, y: np.ndarray, probs: np.ndarray, paths: Sequence[Path],
                    class_names: list[str], columns: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    pred = probs.argmax(axis=1)
    m = classification_metrics(y, pred, num_classes=len(class_names))
    atomic_write_text(out.classification_report, format_classification_report(m, class_names) + "\n")
    per_class = m["per_class"]
    rows = [["class", "precision", "recall", "f1", "support"]]
    rows += [[name, per_class["precision"][i], per_class["recall"][i], per_class["f1"][i], per_class["support"][i]]
             for i, name in enumerate(class_names)]
    write_csv(out.per_class, rows)
    plot_confusion_matrix(m["confusion_matrix"], class_names, out.confusion_matrix)
    header = ["path", "label", "predicted", "confidence", *(f"p_{name}" for name in class_names), *columns]
    pred_rows = [header] + [
        [str(p), class_names[t], class_names[k], f"{probs[i, k]:.6f}", *(f"{v:.6f}" for v in probs[i]),
         *(values[i] for values in columns.values())]
        for i, (p, t, k) in enumerate(zip(paths, y, pred))
    ]
    write_csv(out.predictions, pred_rows)
    m["class_names"] = list(class_names)
    return m


def _regression(out: EvalDir, y: np.ndarray, pred: np.ndarray, paths: Sequence[Path]) -> dict[str, Any]:
    counts = bool(np.all(np.equal(np.mod(y, 1), 0)))  # integer targets: report counting metrics too
    m = regression_metrics(y, pred, counts=counts)
    plot_predicted_vs_true(y, pred, out.predicted_vs_true, metrics=m)
    if counts:  # the whole count the count metrics score, beside the raw value
        rows = [["path", "value", "predicted", "predicted_count", "error"]]
        rows += [[str(p), f"{t:g}", f"{v:.6f}", str(c), f"{v - t:.6f}"]
                 for p, t, v, c in zip(paths, y, pred, rounded_counts(pred))]
    else:
        rows = [["path", "value", "predicted", "error"]]
        rows += [[str(p), f"{t:g}", f"{v:.6f}", f"{v - t:.6f}"] for p, t, v in zip(paths, y, pred)]
    write_csv(out.predictions, rows)
    return m


_LABELS = {"accuracy": "accuracy", "macro_f1": "macro-F1", "mae": "MAE", "rmse": "RMSE", "r2": "R²",
           "dic": "DiC", "abs_dic": "|DiC|", "count_accuracy": "exact count", "count_within_one": "count within one"}


def summary_lines(metrics: Evaluation | dict[str, Any]) -> list[str]:
    """A finished evaluation in a few lines for a person: every headline figure of the task (accuracy and
    macro-F1; MAE, RMSE and R², and for counts DiC, |DiC|, exact and within-one agreement), the headline's
    confidence interval, and the trivial predictor's figure it must beat."""
    ev = metrics if isinstance(metrics, Evaluation) else Evaluation.from_dict(metrics)
    headline, ci, values = ev.headline_metric, ev.interval, ev.values

    def shown(key: str) -> str:
        value = values[key]
        text = f"{value:.1%}" if key in ("count_accuracy", "count_within_one") else f"{value:.4f}"
        if key == headline and ci is not None:
            text += f" ({ci.confidence:.0%} CI {ci.low:.4f} to {ci.high:.4f})"
        return f"{_LABELS[key]} {text}"

    keys = ("accuracy", "macro_f1") if ev.task == "classification" else ("mae", "rmse", "r2")
    split = ev.split or "evaluation"
    where = f"{split} ({ev.num_images} images)" if ev.num_images is not None else split
    lines = [f"{where}: " + "  ".join(shown(k) for k in keys if k in values)]
    counting = [k for k in ("dic", "abs_dic", "count_accuracy", "count_within_one") if k in values]
    if counting:
        lines.append("  counts: " + "  ".join(shown(k) for k in counting))
    base = ev.baseline
    if base is not None and base.score(headline) is not None:
        lines.append(f"  baseline, {base.predictor_text()}: {_LABELS[headline]} {base.score(headline):.4f}")
    return lines
