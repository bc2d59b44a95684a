"""The frozen pretrained features the model data checks use (likely label errors, feature near-duplicates), and
the checks as ``train`` runs them before making a run folder. The checks live in
:mod:`plantpheno.data.doctor.runner`, which asks for features through the function made here, since data never
imports models. The features are those of the bundled ImageNet EfficientNet-Lite0 (offline,
``plantpheno[weights]``) at 224 px."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from plantpheno.config import ModelConfig
from plantpheno.data.doctor.findings import DataCheckReport
from plantpheno.data.doctor.runner import FEATURE_BACKBONE, FEATURE_SIZE, FeatureExtractor, enforce, run_data_checks
from plantpheno.reporting import Reporter
from plantpheno.run.folder import data_check_path
from plantpheno.training.job import TrainingJob


def check_before_training(job: TrainingJob) -> DataCheckReport | None:
    """The data checks (``data.checks``) of a new run, on rank 0 (None elsewhere, and when they are off): an
    error-level finding raises ``DataCheckError`` before any run folder exists, unless
    ``data.checks.on_error: warn``."""
    config = job.config
    if not (job.dist.is_main and config.data.checks.enabled):
        return None
    if config.data.bands is not None:
        job.reporter.info("data checks on band images: the quality, near-duplicate, background-shortcut and "
                          "frozen-feature checks measure 8-bit RGB pixels and are not run (data_check.json lists "
                          "them as skipped); exact duplicates are found by the band values, and labels, each "
                          "band's statistics, constant bands and train/test shift are checked")
    extract = frozen_features(device=config.device, num_workers=config.data.num_workers)
    report = run_data_checks(job.prepared, config.data, seed=config.seed, output_dir=config.output_dir,
                             extract=extract, reporter=job.reporter)
    return enforce(report, on_error=config.data.checks.on_error,
                   where=data_check_path(config.output_dir, config.experiment), reporter=job.reporter)


def frozen_features(*, device: str, num_workers: int | str) -> FeatureExtractor:
    """A function from image paths to their frozen features (one float16 row per path), on ``device`` (the
    ``device`` setting) with ``num_workers`` (``data.num_workers``) loader workers; the network is built when it is
    called (only for pictures whose features are not memoised yet)."""

    def extract(paths: Sequence[Path], reporter: Reporter) -> np.ndarray:
        return _compute(list(paths), device, num_workers, reporter)

    return extract


def _compute(paths: list[Path], device_setting: str, num_workers: int | str, reporter: Reporter) -> np.ndarray:
    import torch

    from plantpheno.data.datasets import resolve_num_workers
    from plantpheno.device import resolve_device
    from plantpheno.models import build_model, normalization
    from plantpheno.training.features import extract_features, pass_batch_size

    model = build_model(ModelConfig(backbone=FEATURE_BACKBONE, pretrained="bundled"), num_outputs=1)
    mean, std = normalization(model)  # the bundled weights' own, whatever data.mean and data.std say
    device = resolve_device(device_setting)
    model = model.to(device)
    with torch.inference_mode():
        features = extract_features(model, paths, image_size=FEATURE_SIZE, mean=mean, std=std,
                                    batch_size=pass_batch_size(64, device), device=device,
                                    num_workers=resolve_num_workers(num_workers), reporter=reporter,
                                    desc="data checks: frozen features")
    return features.numpy().astype(np.float16)
