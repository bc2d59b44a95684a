"""A run's network as ``data suggest`` uses it: pooled backbone features of any image, computed once and kept in
the run's output folder (``OUTPUT_DIR/.cache/suggest/``), and the run's own head on those features.

The memo is keyed by each file's SHA-256 and, per file, by everything the features depend on: the backbone's
weights (not the head's: runs that share a frozen backbone share the memo), the input size, the resize and the
normalisation. A second round over the same pool, or a larger pool, computes only the new images.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from plantpheno.data.doctor.runner import read_feature_memo, write_feature_memo
from plantpheno.config import Config
from plantpheno.data.cache import CACHE_DIR
from plantpheno.data.images import ImageCheck
from plantpheno.models import build_model
from plantpheno.records.model_meta import ModelMeta
from plantpheno.reporting import Reporter
from plantpheno.run.folder import RunDir
from plantpheno.training.checkpoint import load_checkpoint
from plantpheno.training.features import extract_features, pass_batch_size
from plantpheno.training.objectives import task_from_meta

MEMO = "suggest/features-{key}.npz"  # under OUTPUT_DIR/.cache


@dataclass(frozen=True)
class RunModel:
    """A run's best network (eval mode) with what its checkpoint records, and where its features are kept."""

    run: RunDir
    config: Config
    model: nn.Module
    meta: ModelMeta
    temperature: float
    device: torch.device

    @property
    def regression(self) -> bool:
        return not self.meta.is_classification

    @property
    def class_names(self) -> list[str]:
        return list(self.meta.class_names or [])

    @property
    def memo(self) -> Path:
        # the run folder is OUTPUT_DIR/<experiment>/<run>: its output folder's cache is two levels up
        return self.run.path.parent.parent / CACHE_DIR / MEMO.format(key=_backbone_key(self.model, self.meta))


def load_run_model(run: RunDir, *, device: torch.device) -> RunModel:
    """The run's checkpoint to use (best, else last) as a network on ``device``."""
    config = run.read_config()
    path = run.checkpoint_to_use()
    if path is None:
        from plantpheno.errors import RunDirError

        raise RunDirError(f"{run.path} has no checkpoint yet ({run.best_checkpoint} is missing): train it first")
    checkpoint = load_checkpoint(path)
    meta = ModelMeta.from_checkpoint(checkpoint, source=path)
    model = build_model(config.model.model_copy(update={"pretrained": False}), num_outputs=meta.num_outputs)
    model.load_state_dict(checkpoint["model"])
    temperature = 1.0
    if run.temperature.is_file():
        temperature = float(json.loads(run.temperature.read_text(encoding="utf-8")).get("temperature", 1.0))
    return RunModel(run, config, model.to(device).eval(), meta, temperature, device)


def _backbone_key(model: nn.Module, meta: ModelMeta) -> str:
    """A hash of the backbone's weights and buffers (the classifier left out) and the preprocessing."""
    head = {id(t) for t in model.get_classifier().state_dict(keep_vars=True).values()}
    # the same text as when the metadata was a mapping (lists), so memos written then stay valid
    digest = hashlib.sha256(json.dumps([meta.backbone, meta.image_size, meta.resize, list(meta.mean),
                                        list(meta.std)]).encode())
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) not in head:
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:24]


def features_of(run_model: RunModel, checks: Sequence[ImageCheck], *, num_workers: int = 0,
                reporter: Reporter | None = None) -> np.ndarray:
    """Pooled backbone features ``(N, D)`` float32 of the checked (readable) images, from the memo where it has
    them; the others are computed once and added to it."""
    memo = read_feature_memo(run_model.memo)
    todo = list(dict.fromkeys(c.sha256 for c in checks if c.sha256 not in memo))
    if todo:
        first = {c.sha256: c.path for c in reversed(checks)}
        meta = run_model.meta
        with torch.inference_mode():
            found = extract_features(run_model.model, [first[h] for h in todo], image_size=meta.image_size,
                                     mean=list(meta.mean), std=list(meta.std), resize=meta.resize,
                                     batch_size=pass_batch_size(64, run_model.device), device=run_model.device,
                                     num_workers=num_workers, reporter=reporter, desc="suggest: backbone pass")
        memo.update(zip(todo, found.numpy().astype(np.float16)))
        write_feature_memo(run_model.memo, memo)
    return np.stack([memo[c.sha256] for c in checks]).astype(np.float32)


@torch.no_grad()
def head_outputs(run_model: RunModel, features: np.ndarray) -> np.ndarray:
    """The run's head on pooled features: calibrated class probabilities ``(N, K)`` or trait values ``(N,)``."""
    head = run_model.model.get_classifier()
    raw = head(torch.from_numpy(features).to(run_model.device)).float()
    task = task_from_meta(run_model.meta)
    if not run_model.regression:
        raw = raw / run_model.temperature  # as predict does: fitted on the validation split
    return task.predictions(raw).cpu().numpy()
