"""A training run's tracking from start to end: open (or re-open) tracker runs with params and lineage
tags, and at the end log the final evaluation and the run's files as artifacts."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from plantpheno.config import Config, config_to_dict
from plantpheno.records.evaluation import Evaluation
from plantpheno.reporting import Reporter
from plantpheno.run.folder import EVAL_DIR, RunDir
from plantpheno.tracking import flatten
from plantpheno.tracking.session import TrackerSet, build_trackers


def open_run_tracking(config: Config, run: RunDir, *, split_sizes: Mapping[str, int], num_classes: int,
                      fingerprint: str, task: str, resuming: bool, reporter: Reporter) -> TrackerSet:
    """Start (or re-open, on resume) every tracker run; new runs log params and lineage tags."""
    trackers = build_trackers(config, run, reporter=reporter)
    previous = run.read_status().get("tracking") if resuming else None
    ids = trackers.start(run_name=run.name, resume_ids=previous)
    run.write_status("starting", tracking={**(previous or {}), **ids})
    if not resuming:
        params = flatten(config_to_dict(config))
        params.update({f"data.num_{k}": str(n) for k, n in split_sizes.items()})
        params["data.num_classes"] = str(num_classes)
        trackers.log_params(params)
        env = json.loads(run.environment.read_text(encoding="utf-8"))
        trackers.set_tags({
            "dataset_fingerprint": fingerprint, "git_commit": env["git_commit"],
            "git_dirty": env["git_dirty"], "plantpheno_version": env["plantpheno"], "torch_version": env["torch"],
            "timm_version": env["timm"], "device": env["device"], "task": task,
            "backbone": config.model.backbone, "run_dir": str(run.path.resolve()),
            **_data_check_tags(run),
        })
    for hint in trackers.hints():
        reporter.info(f"tracking: {hint}")
    return trackers


def _data_check_tags(run: RunDir) -> dict[str, str]:
    """What the data checks found (counts, the checks with findings, key figures), when they ran."""
    if not run.data_check.is_file():
        return {}
    from plantpheno.data.doctor.findings import DataCheckReport

    return DataCheckReport.read(run.data_check).tags()


def log_run_results(trackers: TrackerSet, run: RunDir, metrics: dict[str, Any], *, split: str, step: int,
                    log_checkpoint: bool) -> None:
    """Final evaluation metrics (``test/accuracy`` ...) and the run's files as artifacts."""
    prefix = "test" if split == "test" else f"eval_{split}"
    ev = Evaluation.from_dict(metrics)
    final = {f"{prefix}/{k}": v for k, v in ev.counts_and_values().items()}
    ci = ev.interval
    if ci is not None:
        final[f"{prefix}/{ci.metric}_ci_low"], final[f"{prefix}/{ci.metric}_ci_high"] = ci.low, ci.high
    verdict = ev.verdict
    if verdict is not None and verdict.baseline is not None:
        final[f"{prefix}/baseline_{verdict.metric}"] = verdict.baseline
    calibration = ev.calibration
    for when, scores in (("before", calibration and calibration.before), ("after", calibration and calibration.after)):
        if scores and scores.ece is not None:
            final[f"{prefix}/ece_{when}_temperature"] = scores.ece
    final.update(unknown_figures(ev, prefix))
    final.update(band_importance_figures(run))
    trackers.log_metrics(final, step=step)
    for path in run.artifacts():
        trackers.log_artifact(path, folder="run")
    for path in sorted(run.eval(split).path.iterdir()):
        trackers.log_artifact(path, folder=f"{EVAL_DIR}/{split}")
    if log_checkpoint:
        trackers.log_artifact(run.best_checkpoint, folder=run.checkpoints.name)


def unknown_figures(ev: Evaluation, prefix: str) -> dict[str, float]:
    """The share of the evaluated split (and of validation) flagged unknown by the run's OOD detector, with its
    Wilson interval: ``test/unknown_fraction``, ``..._low``, ``..._high``, ``test/val_unknown_fraction`` ..."""
    found: dict[str, float] = {}
    unknowns = ev.unknowns
    if unknowns is None:
        return found
    for name, share in (("unknown_fraction", unknowns.flagged), ("val_unknown_fraction", unknowns.val)):
        if share is not None and share.fraction is not None:
            found[f"{prefix}/{name}"] = share.fraction
            if share.low is not None and share.high is not None:
                found[f"{prefix}/{name}_low"], found[f"{prefix}/{name}_high"] = share.low, share.high
    return found


def band_importance_figures(run: RunDir) -> dict[str, float]:
    """A band run's ``band_importance.json`` as metrics: per band the drop of the validation headline when it is
    replaced by its training mean, its interval and rank (``val_band_drop/nir``, ``..._low``, ``..._high``,
    ``val_band_rank/nir``), and the headline with every band (``val_band_baseline``). Nothing for an RGB run or
    one without the file; the file itself goes to the trackers as an artifact (``RunDir.artifacts``)."""
    if not run.band_importance.is_file():
        return {}
    record = json.loads(run.band_importance.read_text(encoding="utf-8"))
    found: dict[str, float] = {}
    every_band = record.get("baseline") or {}  # the headline with every band (band_importance.json, no record)
    if every_band.get("estimate") is not None:
        found["val_band_baseline"] = float(every_band["estimate"])
    for row in record.get("bands", []):
        band = re.sub(r"[^A-Za-z0-9_.\- ]", "_", str(row["band"]))  # MLflow's metric name characters
        drop = row["drop"]
        found[f"val_band_drop/{band}"] = float(drop["estimate"])
        for end in ("low", "high"):  # None when evaluation.bootstrap_samples = 0: no interval, none logged
            if drop.get(end) is not None:
                found[f"val_band_drop/{band}_{end}"] = float(drop[end])
        found[f"val_band_rank/{band}"] = float(row["rank"])
    return found
