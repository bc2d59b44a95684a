"""Which bands matter: for a run of ``data.bands``, how much the headline metric falls on the VALIDATION split when
one band is replaced by its training mean, with a paired bootstrap interval of the fall (``band_importance.json``).

Bands are standardised by statistics of the training split (:class:`~plantpheno.data.bands.BandNorm`), so the
training mean of every band is 0 in the model's input: a band is "removed" by setting its channel to 0 in every
validation image, the other bands untouched. Derived bands (``ndvi``) are bands like the others: replacing one leaves
the bands it is computed from as they are.

The drop is the metric with every band minus the metric with the band replaced, signed so that a positive drop is
always a worse model (accuracy falls, MAE rises). Both metrics are means over images (accuracy of 0/1 hits, MAE of
absolute errors), so the drop is the mean of per-image differences, and its interval resamples images: the same
resample for both models (paired), which is far tighter than two separate intervals. It is computed at the end of
``train`` (after the model's own evaluation, before the report that shows it), on validation data only: a
choice anyone makes from it (which bands to keep) must not be made on the test split. Test-time augmentation and
the softmax temperature are not applied (neither changes which band the model relies on; the temperature does not
change accuracy at all).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from plantpheno.band_config import BandSpec
from plantpheno.config import EvaluationConfig
from plantpheno.data.datasets import Loaders
from plantpheno.evaluation.metrics import bootstrap_ci
from plantpheno.files.atomic import atomic_write_text
from plantpheno.models import input_format, set_train_mode
from plantpheno.reporting import Reporter
from plantpheno.run.folder import RunDir
from plantpheno.tasks import task_metrics

VERSION = 1
SPLIT = "val"
REPLACEMENT = "its training mean (0 after the per-band standardisation), the other bands unchanged"


@torch.no_grad()
def per_image_scores(model: nn.Module, loader: Any, *, task: Any, bands: int, device: torch.device,
                     finish: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-image scores of the headline metric (1/0 hits for a classifier, absolute errors for a trait): with every
    band ``(N,)``, and with band ``b`` set to 0 ``(N, bands)``. Each batch is read once and run ``bands + 1``
    times."""
    set_train_mode(model, False)
    fmt = input_format(model)
    base, ablated = [], []
    for images, target in loader:
        images = finish(images, device, memory_format=fmt)
        target = target.to(device)
        base.append(_scores(model(images), target, task))
        row = []
        for band in range(bands):
            changed = images.clone()
            changed[:, band] = 0
            row.append(_scores(model(changed), target, task))
        ablated.append(np.stack(row, axis=1))
    if not base:
        return np.zeros(0), np.zeros((0, bands))
    return np.concatenate(base), np.concatenate(ablated)


def _scores(raw: torch.Tensor, target: torch.Tensor, task: Any) -> np.ndarray:
    if task.name == "classification":
        return (raw.float().argmax(dim=1) == target).cpu().numpy().astype(np.float64)
    return (task.predictions(raw) - target.float()).abs().cpu().numpy().astype(np.float64)


def importance(base: np.ndarray, ablated: np.ndarray, names: Sequence[str], *, task: str, n_resamples: int,
               confidence: float, seed: int) -> dict[str, Any]:
    """The record of ``band_importance.json`` from per-image scores (:func:`per_image_scores`): the headline with
    every band, and per band the metric with it replaced and the drop (positive = worse), ranked by the drop."""
    spec = task_metrics(task)
    metric = spec.headline
    sign = 1.0 if spec.direction(metric) == "max" else -1.0

    def interval(values: np.ndarray) -> dict[str, Any]:
        if n_resamples < 1:  # evaluation.bootstrap_samples = 0: the estimate alone, said so
            return {"estimate": float(values.mean()), "low": None, "high": None, "confidence": confidence,
                    "n_resamples": 0, "method": "none (evaluation.bootstrap_samples = 0)"}
        return bootstrap_ci(_mean, values, values, n_resamples=n_resamples, confidence=confidence, seed=seed)

    rows = [{"band": name, "value": float(ablated[:, i].mean()),
             "drop": interval(sign * (base - ablated[:, i]))} for i, name in enumerate(names)]
    rows.sort(key=lambda r: -r["drop"]["estimate"])
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return {"version": VERSION, "split": SPLIT, "metric": metric, "direction": spec.direction(metric),
            "num_images": int(len(base)), "replacement": REPLACEMENT, "baseline": interval(base), "bands": rows,
            "drop": "the metric with every band minus the metric with the band replaced, signed so that positive "
                    "is worse; paired percentile bootstrap over images"}


def _mean(values: np.ndarray, _: np.ndarray) -> float:
    return float(np.mean(values))


def write_band_importance(model: nn.Module, loaders: Loaders, *, run: RunDir, task: Any,
                          bands: Sequence[BandSpec] | None, evaluation: EvaluationConfig, seed: int,
                          device: torch.device, reporter: Reporter,
                          checkpoint_epoch: int | None) -> dict[str, Any] | None:
    """Measure and write ``RUN_DIR/band_importance.json`` (atomically) for a run of ``data.bands``; nothing for an
    RGB run (``bands`` None) or one without a validation split. Intervals as the evaluation's
    (``evaluation.bootstrap_samples``, ``confidence``, the run's ``seed``). Returns the record."""
    if bands is None or SPLIT not in loaders:
        return None
    names = [b.name.lower() for b in bands]
    reporter.info(f"band importance: the {SPLIT} split with each of {len(names)} bands replaced by its training mean")
    base, ablated = per_image_scores(model, loaders[SPLIT], task=task, bands=len(names), device=device,
                                     finish=loaders.finish)
    if len(base) == 0:
        return None
    record = importance(base, ablated, names, task=task.name, n_resamples=evaluation.bootstrap_samples,
                        confidence=evaluation.confidence, seed=seed)
    record["checkpoint_epoch"] = checkpoint_epoch
    atomic_write_text(run.band_importance, json.dumps(record, indent=2) + "\n")
    top = record["bands"][0]
    reporter.info(f"band importance ({record['metric']} on {SPLIT}, {record['baseline']['estimate']:.4f} with every "
                  f"band): {top['band']} matters most (drop {top['drop']['estimate']:+.4f}); {run.band_importance}")
    return record


def read_band_importance(run: RunDir) -> dict[str, Any] | None:
    """The run's ``band_importance.json``, or None (an RGB run, or a band run of an earlier plantpheno)."""
    path = run.band_importance
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))
