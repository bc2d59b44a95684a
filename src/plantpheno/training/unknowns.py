"""A run's OOD detector and selective prediction: fitted at the end of ``train`` on the train and validation splits,
applied to the evaluated split (``eval/<split>/unknown.json``).

The detector (:mod:`plantpheno.evaluation.ood`) is stored in the run folder as ``ood.json`` (+ the training
features, ``ood_features.npz``), beside ``temperature.json``, and copied into registry packages; the confidence
threshold of selective prediction (:mod:`plantpheno.evaluation.selective`), chosen on validation, is stored in it too
so that ``evaluate`` applies what ``train`` chose without looking at other data.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from plantpheno.files.atomic import atomic_write_text
from plantpheno.config import Config, DataConfig
from plantpheno.data.bands import BandNorm
from plantpheno.data.datasets import Loaders
from plantpheno.data.prepared import PreparedData
from plantpheno.evaluation import ood, selective
from plantpheno.evaluation.calibration import softmax
from plantpheno.evaluation.inference import Predictions
from plantpheno.evaluation.report_unknown import unknown_path
from plantpheno.reporting import Reporter
from plantpheno.records.evaluation import read_evaluation
from plantpheno.run.folder import RunDir
from plantpheno.training.unknown_figures import check_can_fit  # noqa: F401 - pipeline's, beside detect_unknowns
from plantpheno.training.unknown_figures import record_in_evaluation, unknowns_record

if TYPE_CHECKING:
    from plantpheno.training.job import TrainingJob


def pooled(model: nn.Module, prepared: PreparedData, loaders: Loaders, split: str, *, config: Config,
           mean: Sequence[float], std: Sequence[float], device: torch.device, indices: np.ndarray | None = None,
           reporter: Reporter | None = None) -> np.ndarray:
    """The penultimate (pooled) features of ``split``'s images (those at ``indices``), with the evaluation
    preprocessing: the backbone pass the feature cache makes."""
    from plantpheno.training.features import extract_features, pass_batch_size

    samples = prepared.splits[split]
    chosen = range(len(samples)) if indices is None else indices
    loader = loaders[split] if split in loaders else None
    if prepared.band_norm is not None:  # data.bands: read through the band loaders, as evaluation reads them
        return _band_pooled(model, [samples[i].path for i in chosen], prepared.band_norm, data=config.data,
                            companions=[dict(samples[i].companions) for i in chosen], device=device,
                            num_workers=loader.num_workers if loader is not None else 0,
                            reporter=reporter, desc=f"OOD features ({split})")
    everything = indices is None or len(indices) == len(samples)
    cache = loader.dataset.cache if loader is not None and everything and split != "train" else None
    return extract_features(model, [samples[i].path for i in chosen], image_size=config.data.image_size,
                            mean=mean, std=std, batch_size=pass_batch_size(config.data.batch_size, device),
                            device=device, num_workers=loader.num_workers if loader is not None else 0,
                            cache=cache, resize=config.data.resize, reporter=reporter,
                            desc=f"OOD features ({split})").numpy()


@torch.no_grad()
def _band_pooled(model: nn.Module, paths: Sequence[Path], norm: BandNorm, *, data: DataConfig,
                 companions: Sequence[dict[str, Path]], device: torch.device, num_workers: int,
                 reporter: Reporter | None, desc: str) -> np.ndarray:
    """The pooled features of band images, standardised and squared as the evaluation loader does
    (:class:`~plantpheno.data.band_loaders.BandDataset` with the evaluation transform)."""
    from torch.utils.data import DataLoader

    from plantpheno.data.band_loaders import BandDataset, band_eval_transform
    from plantpheno.data.datasets import EpochSampler
    from plantpheno.training.features import pass_batch_size, pooled_features

    assert data.bands is not None
    dataset = BandDataset(paths, [0] * len(paths), band_eval_transform(data.image_size, data.resize),
                          bands=data.bands, norm=norm, regression=False, companions=companions)
    loader = DataLoader(dataset, batch_size=pass_batch_size(data.batch_size, device), num_workers=num_workers,
                        sampler=EpochSampler(len(paths), seed=0, shuffle=False), generator=torch.Generator())
    was_training, features = model.training, pooled_features(model)
    model.eval()
    bar = reporter.progress(total=len(paths), desc=desc, unit="img") if reporter is not None else None
    chunks = []
    for images, _ in loader:
        chunks.append(features(images.to(device)).float().cpu().numpy())
        if bar is not None:
            bar.update(len(images))
    if bar is not None:
        bar.close()
    model.train(was_training)
    return np.concatenate(chunks) if chunks else np.zeros((0, model.num_features), np.float32)


def cached_pooled(source: tuple[Loaders, nn.Module] | None, model: nn.Module,
                  device: torch.device) -> dict[str, np.ndarray] | None:
    """The final model's pooled train/val features from the feature cache (view 0: the evaluation preprocessing),
    given the last phase's inputs (``FrozenFeatures.validation_source``): the cached pooled features when that
    phase trained the head on them; the cached activations at the cut run through the fine-tuned blocks when it
    was a fine-tune phase (a few blocks, not the whole backbone again); None otherwise."""
    from plantpheno.training.features import CachedHead, map_cached
    from plantpheno.training.fine_tune import CutSuffix

    if source is None:
        return None
    loaders, net = source
    if isinstance(net, CachedHead):
        return {split: loaders[split].dataset.features[0].numpy() for split in ("train", "val")}
    if not isinstance(net, CutSuffix):
        return None
    acts = {split: loaders[split].dataset.features[:1] for split in ("train", "val")}
    pooled = map_cached(acts, lambda a: model.forward_head(net.forward_trunk(a), pre_logits=True), model,
                        device=device)
    return {split: tensor[0].numpy() for split, tensor in pooled.items()}


@torch.no_grad()
def head_logits(model: nn.Module, features: np.ndarray, device: torch.device) -> np.ndarray | None:
    """The classifier applied to pooled features (the model's logits, as ``model(x)`` gives them in eval mode), or
    None for a model whose head is not one module (distilled models' pairs of heads)."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if not isinstance(head, nn.Module):
        return None
    was_training = head.training
    head.eval()
    out = torch.cat([head(torch.from_numpy(features[i:i + 4096]).float().to(device)).float().cpu()
                     for i in range(0, max(len(features), 1), 4096)]).numpy()
    head.train(was_training)
    return out


def kept_features(passes: dict[str, Predictions] | None, prepared: PreparedData, split: str) -> np.ndarray | None:
    """The pooled features that the evaluation's pass over ``split`` kept (``evaluate_split``'s ``passes``), when
    it kept them for every image of the split (not a shard), else None: the caller then passes the images itself.
    Never the train split's: its loader augments and shuffles, the detector's features take the evaluation
    preprocessing in the split's order."""
    found = passes.get(split) if passes is not None and split != "train" else None
    if found is None or found.features is None or len(found.features) != len(prepared.splits[split]):
        return None
    return found.features


def kept_split(passes: dict[str, Predictions] | None, prepared: PreparedData,
               split: str) -> tuple[list[Path], np.ndarray] | None:
    """``split``'s image paths and the pooled features its evaluation pass kept (:func:`kept_features`), or None."""
    features = kept_features(passes, prepared, split)
    return None if features is None else ([s.path for s in prepared.splits[split]], features)


def fit_run_detector(model: nn.Module, *, prepared: PreparedData, loaders: Loaders, config: Config,
                     device: torch.device, run: RunDir, mean: Sequence[float], std: Sequence[float],
                     reporter: Reporter, cached: dict[str, np.ndarray] | None = None,
                     passes: dict[str, Predictions] | None = None) -> ood.OODDetector | None:
    """Fit the detector (``evaluation.ood``) and the selective threshold on train/val and store them in the run
    folder; ``cached``: the feature cache's pooled train/val features, when they are the final model's; ``passes``:
    the evaluation's predictions, whose val features serve otherwise (:func:`kept_features`). Removes a
    stale detector when ``evaluation.ood.enabled`` is false."""
    settings = config.evaluation.ood
    if not settings.enabled:
        for name in (ood.DETECTOR_FILE, ood.FEATURES_FILE):
            (run.path / name).unlink(missing_ok=True)
        return None
    if not prepared.splits.get("val"):
        reporter.warning("no OOD detector fitted: its threshold is set on the validation split, which is empty")
        return None
    classification = prepared.class_names is not None
    score = settings.score if classification else "knn"  # a trait model has no class probabilities
    picked = ood.subsample(len(prepared.splits["train"]), settings.max_train_features, config.seed)
    args: dict[str, Any] = dict(config=config, mean=mean, std=std, device=device, reporter=reporter)
    val = cached["val"] if cached is not None else kept_features(passes, prepared, "val")
    if val is None:
        val = pooled(model, prepared, loaders, "val", **args)
    train = None
    if score in ood.FEATURE_SCORES:
        train = cached["train"][picked] if cached is not None else pooled(model, prepared, loaders, "train",
                                                                          indices=picked, **args)
    logits = head_logits(model, val, device) if classification else None
    if classification and logits is None and score in ood.LOGIT_SCORES:  # a head that is not one module
        score = "knn"
        if train is None:
            train = pooled(model, prepared, loaders, "train", indices=picked, **args)
    temperature = _temperature(run)
    labels = np.asarray(prepared.targets("train"))[picked].astype(int) if classification else None
    detector = ood.fit_detector(score, keep=settings.keep, train_features=train, train_labels=labels,
                                val_features=val, val_logits=logits, temperature=temperature, k=settings.k,
                                max_train_features=settings.max_train_features, seed=config.seed)
    if classification and logits is not None:
        target = config.evaluation.selective.target_accuracy
        yv = np.asarray(prepared.targets("val"), dtype=int)
        conf = softmax(logits, temperature).max(1)
        detector = replace(detector, confidence_threshold=selective.choose_threshold(conf, logits.argmax(1) == yv,
                                                                                        target),
                           target_accuracy=target)
    detector.save(run.path)
    size = (run.path / ood.FEATURES_FILE).stat().st_size if detector.bank is not None else 0
    stored = f"; {len(detector.bank)} training feature vectors stored ({size / 2**20:.1f} MiB)" if size else ""
    reporter.info(f"OOD detector fitted on train/val: {detector.describe()}{stored}")
    return detector


def _temperature(run: RunDir) -> float:
    if not run.temperature.is_file():
        return 1.0
    return float(json.loads(run.temperature.read_text(encoding="utf-8")).get("temperature", 1.0))


def evaluate_unknowns(model: nn.Module, *, split: str, prepared: PreparedData, loaders: Loaders, config: Config,
                      device: torch.device, run: RunDir, mean: Sequence[float], std: Sequence[float],
                      reporter: Reporter, passes: dict[str, Predictions] | None = None) -> dict[str, Any] | None:
    """Apply the run's detector (and selective threshold) to ``split``; writes ``eval/<split>/unknown.json``.
    ``passes``: the evaluation's predictions, whose pooled features of ``split`` are used when it kept them
    (:func:`kept_features`) instead of passing the images again. A run without a detector says so in one line and
    writes nothing."""
    detector = ood.OODDetector.load(run.path)
    out = unknown_path(run, split)
    if detector is None:
        out.unlink(missing_ok=True)
        reporter.info(ood.describe_missing(str(run.path)))
        return None
    features = kept_features(passes, prepared, split)
    if features is None:
        features = pooled(model, prepared, loaders, split, config=config, mean=mean, std=std, device=device,
                          reporter=reporter)
    logits = head_logits(model, features, device) if prepared.class_names is not None else None
    scores = detector.scores(logits=logits, features=features)
    flagged = detector.unknown(scores)
    ev = config.evaluation
    block: dict[str, Any] = {
        "split": split, "detector": ood.record(detector), "num_images": len(scores),
        "unknown": int(flagged.sum()), "unknown_fraction": float(flagged.mean()) if len(scores) else None,
        "unknown_interval": selective.wilson(int(flagged.sum()), len(scores), ev.confidence),
        "interval": "Wilson", "score_quantiles": _quantiles(scores)}
    if logits is not None:
        y = np.asarray(prepared.targets(split), dtype=int)
        correct = logits.argmax(1) == y
        block["known_accuracy"] = float(correct[~flagged].mean()) if (~flagged).any() else None
        block["unknown_accuracy"] = float(correct[flagged].mean()) if flagged.any() else None
        conf = softmax(logits, detector.temperature).max(1)
        block["selective"] = _selective(detector, conf, correct, split, ev.confidence)
    atomic_write_text(out, json.dumps(block, indent=2) + "\n")
    correct = logits.argmax(1) == np.asarray(prepared.targets(split), dtype=int) if logits is not None else None
    record_in_evaluation(run, split, unknowns_record(detector, flagged, correct=correct, confidence=ev.confidence))
    low, high = block["unknown_interval"] or (float("nan"), float("nan"))
    reporter.info(f"{block['unknown']} of {len(scores)} {split} image(s) flagged unknown by {detector.score} "
                  f"({block['unknown_fraction'] or 0:.1%}, {ev.confidence:.0%} interval {low:.1%}-{high:.1%}; the "
                  f"threshold keeps {detector.keep:.0%} of validation images)")
    return block


def _selective(detector: ood.OODDetector, conf: np.ndarray, correct: np.ndarray, split: str,
               confidence: float) -> dict[str, Any]:
    block: dict[str, Any] = {"target_accuracy": detector.target_accuracy, "chosen_on": "val",
                             "threshold": detector.confidence_threshold, "split": split,
                             "curve": selective.risk_coverage(conf, correct)}
    if detector.confidence_threshold is None:
        block["note"] = (f"no confidence threshold reaches {detector.target_accuracy:.1%} accuracy on the validation "
                         f"split")
        return block
    kept = conf >= detector.confidence_threshold
    right = int(correct[kept].sum())
    block.update(kept=int(kept.sum()), num_images=len(conf), coverage=float(kept.mean()) if len(conf) else None,
                 coverage_interval=selective.wilson(int(kept.sum()), len(conf), confidence),
                 accuracy=right / int(kept.sum()) if kept.any() else None,
                 accuracy_interval=selective.wilson(right, int(kept.sum()), confidence))
    return block


def _quantiles(scores: np.ndarray) -> dict[str, float]:
    if not len(scores):
        return {}
    return {f"q{int(q * 100):02d}": float(np.quantile(scores, q)) for q in (0.05, 0.25, 0.5, 0.75, 0.95)}


def detect_unknowns(job: TrainingJob, run: RunDir, *, split: str, fit: bool,
                    passes: dict[str, Predictions] | None = None) -> dict[str, Any] | None:
    """The end of a run's evaluation: with ``fit`` (train only), fit the OOD detector on train/val (features from
    the feature cache where there is one), then flag the unknown images of ``split`` (``eval/<split>/``; the
    share flagged also goes into its ``metrics.json``). Returns that evaluation, None without a detector.
    After the split's evaluation: the detector's MSP/energy scores use the temperature it fitted. ``passes``: that
    evaluation's predictions, whose pooled features are reused (one backbone pass per split)."""
    common = dict(prepared=job.prepared, loaders=job.loaders, config=job.config, device=job.device, run=run,
                  mean=list(job.meta.mean), std=list(job.meta.std), reporter=job.reporter)
    if fit:
        cached = job.features.validation_source() if job.features is not None else None
        fit_run_detector(job.model, cached=cached_pooled(cached, job.model, job.device), passes=passes, **common)
    if evaluate_unknowns(job.model, split=split, passes=passes, **common) is None:
        return None
    return read_evaluation(run.eval(split).metrics).to_dict()
