"""The run's OOD detector on another source (``plantpheno evaluate RUN --data``): every image of the source scored
with the same pooled features and head as a split's, the share flagged unknown, accuracy on kept and flagged images,
and how far the score tells the source from the run's in-source test images (AUROC, FPR95, bootstrap intervals)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from plantpheno.config import EvaluationConfig
from plantpheno.data.sources import read_manifest
from plantpheno.evaluation import ood
from plantpheno.evaluation.ood_separation import separation
from plantpheno.records.evaluation import Separation, Unknowns
from plantpheno.records.model_meta import ModelMeta
from plantpheno.reporting import Reporter
from plantpheno.run.folder import RunDir
from plantpheno.training.features import extract_features, pass_batch_size
from plantpheno.training.unknown_figures import share, unknowns_record
from plantpheno.training.unknowns import head_logits


@torch.no_grad()
def score_images(model: nn.Module, detector: ood.OODDetector, paths: Sequence[Path], *, meta: ModelMeta,
                 batch_size: int, device: torch.device, reporter: Reporter | None, desc: str) -> np.ndarray:
    """The detector's score of each image, from the pooled features and the head, as the split's are scored."""
    features = extract_features(model, list(paths), image_size=meta.image_size, mean=list(meta.mean),
                                std=list(meta.std), batch_size=pass_batch_size(batch_size, device),
                                device=device, num_workers=0, resize=meta.resize, reporter=reporter,
                                desc=desc).numpy()
    return feature_scores(model, detector, features, device=device)


def feature_scores(model: nn.Module, detector: ood.OODDetector, features: np.ndarray, *,
                   device: torch.device) -> np.ndarray:
    """The detector's score of each image from its pooled features (and the head's logits on them)."""
    logits = head_logits(model, features, device) if detector.score in ood.LOGIT_SCORES else None
    return detector.scores(logits=logits, features=features)


def source_unknowns(model: nn.Module, run: RunDir, paths: Sequence[Path], *, correct: np.ndarray,
                    meta: ModelMeta, evaluation: EvaluationConfig, batch_size: int, seed: int, device: torch.device,
                    reporter: Reporter, features: np.ndarray | None = None,
                    in_source: tuple[Sequence[Path], np.ndarray] | None = None
                    ) -> tuple[Unknowns, np.ndarray, np.ndarray] | None:
    """The run's detector on another source's images (``paths``: those with a run class first, one ``correct``
    flag each, then those without), beside the in-source test images of the run's split manifest: the record, and
    each image's score and flag. ``features``: the images' pooled features from the pass that predicted them
    (one row per path; else the images are passed here); ``in_source``: the in-source test images and their pooled
    features from the test split's evaluation pass (used when they are the split manifest's test images, in its
    order). None when the run has no detector."""
    detector = ood.OODDetector.load(run.path)
    if detector is None:
        reporter.info(ood.describe_missing(str(run.path)) + "; add one with plantpheno evaluate RUN --fit-unknowns")
        return None
    ev = evaluation
    scores = (feature_scores(model, detector, features, device=device)
              if features is not None and len(features) == len(paths)
              else score_images(model, detector, paths, meta=meta, batch_size=batch_size, device=device,
                                reporter=reporter, desc="OOD scores (other source)"))
    flagged = detector.unknown(scores)
    mapped = len(correct)
    more: dict[str, object] = {}
    if len(paths) > mapped:
        rest = flagged[mapped:]
        more["expected_unknown_flagged"] = share(int(rest.sum()), len(rest), ev.confidence)
    test = _test_paths(run)
    if test:
        if in_source is not None and _same_images(in_source[0], test):  # scored from the evaluation's pass
            in_scores = feature_scores(model, detector, in_source[1], device=device)
        else:
            in_scores = score_images(model, detector, test, meta=meta, batch_size=batch_size, device=device,
                                     reporter=reporter, desc="OOD scores (in-source test)")
        more["separation"] = Separation.model_validate(
            {"in_source": "test", **separation(in_scores, scores, n_resamples=ev.bootstrap_samples,
                                               confidence=ev.confidence, seed=seed)})
    else:
        more["no_separation"] = f"{run.split_manifest} lists no test image"
    found = unknowns_record(detector, flagged, correct=correct, confidence=ev.confidence, **more)
    return found, scores, flagged


def _same_images(a: Sequence[Path], b: Sequence[Path]) -> bool:
    return [os.path.abspath(p) for p in a] == [os.path.abspath(p) for p in b]


def _test_paths(run: RunDir) -> list[Path]:
    if not run.split_manifest.is_file():
        return []
    return [s.path for s in read_manifest(run.split_manifest, root=None, task="classification", exact=True)
            if s.split == "test"]
