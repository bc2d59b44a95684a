"""Evaluating a trained model on one split of its run: predictions (with TTA when asked), the softmax
temperature fitted on the validation split, calibration before and after, the trivial baseline and the
verdict, all written to ``eval/<split>/`` (``metrics.json`` and the report files)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from plantpheno.files.atomic import atomic_write_text
from plantpheno.config import Config
from plantpheno.data.datasets import Loaders
from plantpheno.data.prepared import PreparedData
from plantpheno.device import amp_dtype
from plantpheno.evaluation import baselines
from plantpheno.evaluation.calibration import calibration_summary, fit_temperature, reliability, softmax
from plantpheno.evaluation.metrics import bootstrap_ci, classification_metrics, regression_metrics
from plantpheno.evaluation.inference import Predictions, predict
from plantpheno.evaluation.report import write_evaluation
from plantpheno.evaluation.tta import views
from plantpheno.reporting import Reporter
from plantpheno.run.folder import RunDir


def evaluate_split(model: nn.Module, loaders: Loaders, *, split: str, task: Any, prepared: PreparedData,
                   config: Config, device: torch.device, run: RunDir, reporter: Reporter,
                   checkpoint_epoch: int | None,
                   validation: tuple[Loaders, nn.Module] | None = None,
                   passes: dict[str, Predictions] | None = None) -> dict[str, Any]:
    """Evaluate ``model`` on ``split`` and write ``RUN_DIR/eval/<split>/``; warn when it does not beat its
    baseline. Classification also fits the temperature on the validation split (``RUN_DIR/temperature.json``).
    ``validation``: loaders and a module whose outputs on their val split are ``model``'s on the validation
    images (the feature cache's frozen part run once); used for the val predictions when there is no TTA.
    ``passes``: filled with the predictions of each split predicted here, with the pooled features of the same pass
    where ``model`` gives them (:mod:`plantpheno.evaluation.one_pass`), so that the OOD detector does not pass the
    images again. Returns the metrics (as in ``metrics.json``)."""
    ev = config.evaluation

    def run_on(name: str) -> Predictions:
        source, net = (validation if name == "val" and validation is not None and ev.tta == "none"
                       else (loaders, model))
        bar = reporter.progress(total=_batches(source[name]), desc=f"predicting {name}", unit="batch")
        try:
            found = predict(net, source[name], task=task, device=device,
                            amp_dtype=amp_dtype(config.training.mixed_precision, device), finish=source.finish,
                            tta=ev.tta, progress=bar, features=passes is not None and net is model)
        finally:
            bar.close()
        if passes is not None:
            passes[name] = found
        return found

    reporter.info(_announcement(split, len(prepared.splits[split]), config, classification=prepared.class_names
                                is not None))
    p = run_on(split)
    y = p.targets
    boot = {"n_resamples": ev.bootstrap_samples, "confidence": ev.confidence, "seed": config.seed}
    extra: dict[str, Any] = {"split": split, "num_images": len(y), "checkpoint_epoch": checkpoint_epoch}
    names = prepared.class_names
    if names is not None:
        y = y.astype(int)
        val = p if split == "val" else (run_on("val") if ev.temperature_scaling or ev.tta != "none" else None)
        temperature, applied = _temperature(run, val, config, checkpoint_epoch, reporter)
        outputs = softmax(p.raw, temperature).astype(np.float32)
        extra["calibration"] = _calibration(p, y, temperature, config, applied=applied)
        base = baselines.classification_baseline(prepared.targets("train"), y, names)
        base["verdict"] = baselines.classification_verdict(y, outputs.argmax(1), base, names, **boot)
        if ev.tta != "none":
            extra["tta"] = _tta_classification(p, y, val, len(names), ev.tta)
    else:
        y = y.astype(float)
        outputs = p.outputs.astype(float)
        counts = bool(np.all(np.mod(y, 1) == 0))
        base = baselines.regression_baseline(prepared.targets("train"), y, counts=counts)
        base["verdict"] = baselines.regression_verdict(y, outputs, base, **boot)
        if ev.tta != "none":
            plain = task.predictions(torch.from_numpy(p.raw_plain)).numpy()
            extra["tta"] = {"mode": ev.tta, "views": list(views(ev.tta)),
                            "with": _pick(regression_metrics(y, outputs), ("mae", "rmse", "r2")),
                            "without": _pick(regression_metrics(y, plain), ("mae", "rmse", "r2"))}
    extra["baseline"] = base
    evaluation = write_evaluation(run.eval(split), targets=y, outputs=outputs,
                                  paths=[s.path for s in prepared.splits[split]], class_names=names,
                                  bootstrap_samples=ev.bootstrap_samples, confidence=ev.confidence, seed=config.seed,
                                  extra=extra)
    verdict = evaluation.verdict
    if evaluation.baseline is not None and verdict is not None and not verdict.is_better:
        reporter.warning(f"on the {split} split the model {verdict.text} ({evaluation.baseline.kind})")
    return evaluation.to_dict()


def _announcement(split: str, images: int, config: Config, *, classification: bool) -> str:
    """The line that says what the evaluation does before it starts (it takes tens of seconds on real data)."""
    ev = config.evaluation
    steps = ["predictions" + (f" with test-time augmentation ({ev.tta})" if ev.tta != "none" else "")]
    if classification and ev.temperature_scaling:
        also = ")" if split == "val" else ", so val is predicted too)"
        steps.append("the softmax temperature (fitted on val" + also)
    steps.append("the trivial baseline and the verdict")
    if ev.bootstrap_samples > 0:
        steps.append(f"{ev.confidence:.0%} bootstrap intervals ({ev.bootstrap_samples} resamples)")
    return f"evaluating the {split} split ({images} images): {', '.join(steps)}"


def _batches(loader: Any) -> int | None:
    try:
        return len(loader)
    except TypeError:  # an iterable loader without a length: a count without a total
        return None


def _temperature(run: RunDir, val: Predictions | None, config: Config, checkpoint_epoch: int | None,
                 reporter: Reporter) -> tuple[float, bool]:
    """Fit the temperature on the validation predictions and store it with the run (or remove a stale one).

    A fit at the end of the search range is not applied: a perfectly separated validation split keeps
    lowering its NLL as T -> 0, which would make every prediction, the wrong ones too, certain."""
    if not config.evaluation.temperature_scaling or val is None:
        run.temperature.unlink(missing_ok=True)
        return 1.0, False
    fit = fit_temperature(val.raw, val.targets.astype(int))
    applied = not fit["at_bound"]
    if not applied:
        reporter.warning(f"temperature scaling not applied: the NLL on the validation split ({fit['num_images']} "
                         f"images) keeps falling up to the search bound T = {fit['temperature']:.3g} (a perfectly "
                         f"separated split), so no temperature can be fitted; probabilities stay as they are (T = 1)")
    record = {"temperature": fit["temperature"] if applied else 1.0, "applied": applied,
              "fitted_temperature": fit["temperature"], "fitted_on": "val", "tta": config.evaluation.tta,
              "checkpoint_epoch": checkpoint_epoch, **{k: v for k, v in fit.items() if k != "temperature"}}
    atomic_write_text(run.temperature, json.dumps(record, indent=2) + "\n")
    return float(record["temperature"]), applied


def _calibration(p: Predictions, y: np.ndarray, temperature: float, config: Config, *,
                 applied: bool) -> dict[str, Any]:
    bins = config.evaluation.calibration_bins
    block: dict[str, Any] = {"bins": bins, "binning": f"{bins} equal-width bins of the top-class confidence",
                             "before": calibration_summary(p.raw, y, bins=bins)}
    if config.evaluation.temperature_scaling and not applied:
        block["not_applied"] = ("the validation split is perfectly separated: its NLL keeps falling as T -> 0, so no "
                                "temperature can be fitted")
    if applied:
        block.update(temperature=temperature, fitted_on="val",
                     after=calibration_summary(p.raw, y, temperature=temperature, bins=bins))
        ev = config.evaluation
        if ev.bootstrap_samples > 0:  # how far to trust the change: ECE is noisy on a few hundred images
            def change(labels: np.ndarray, logits: np.ndarray) -> float:
                return (reliability(softmax(logits, temperature), labels, bins=bins)["ece"]
                        - reliability(softmax(logits), labels, bins=bins)["ece"])

            block["ece_change"] = bootstrap_ci(change, y, p.raw, n_resamples=ev.bootstrap_samples,
                                               confidence=ev.confidence, seed=config.seed)
    return block


def _tta_classification(p: Predictions, y: np.ndarray, val: Predictions | None, k: int,
                        mode: str) -> dict[str, Any]:
    def scores(raw: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        return _pick(classification_metrics(labels, raw.argmax(1), num_classes=k), ("accuracy", "macro_f1"))

    block: dict[str, Any] = {"mode": mode, "views": list(views(mode)), "with": scores(p.raw, y),
                             "without": scores(p.raw_plain, y)}
    if val is not None and val is not p:  # what the choice should rest on: the validation split
        vy = val.targets.astype(int)
        block["val"] = {"with": scores(val.raw, vy), "without": scores(val.raw_plain, vy)}
    return block


def _pick(metrics: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, float]:
    return {k: metrics[k] for k in keys if k in metrics}
