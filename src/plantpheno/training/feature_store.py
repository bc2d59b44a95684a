"""Cached backbone passes kept across runs in one process (budget mode, :mod:`plantpheno.budget`).

A frozen backbone is a fixed function of (backbone, weights, input size, resize mode, normalisation, where it is
cut): its output for an image does not depend on the run, the split the image sits in, or the head trained after
it. Candidates of a budget search (and the folds of a cross-validation) that share those settings therefore share
the pass, which on a CPU is most of a candidate's cost (Lite0 at 224 px: 22 ms an image on a 2-core EPYC,
benchmarks/results/backbone_pass.md; training a head on the features takes a few seconds). The store keeps one
row per image path, so a fold that moves an image from train to val finds it all the same.

The store is an explicit object the caller creates and passes to ``train(feature_store=...)``: no hidden state.
Only view 0 (the evaluation preprocessing) is stored; augmented views depend on the run's seeds.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from pathlib import Path

import torch

log = logging.getLogger(__name__)


class FeatureStore:
    """Backbone outputs per (pass key, image path), the least recently used passes dropped beyond ``max_passes``
    (each holds one tensor row per image: activations at a cut are ~90 KB an image for Lite0 at 224 px)."""

    def __init__(self, *, max_passes: int = 4) -> None:
        if max_passes < 1:
            raise ValueError(f"max_passes must be >= 1, got {max_passes}")
        self.max_passes = max_passes
        self._passes: OrderedDict[Hashable, dict[Path, torch.Tensor]] = OrderedDict()
        self.hits = 0  # images served from the store
        self.misses = 0  # images that had to be passed through the backbone

    def get(self, key: Hashable, paths: Sequence[Path]) -> torch.Tensor | None:
        """The stacked outputs of ``paths`` under ``key``, or None unless every one is stored."""
        rows = self._passes.get(key)
        if rows is None or any(p not in rows for p in paths):
            self.misses += len(paths)
            return None
        self._passes.move_to_end(key)
        self.hits += len(paths)
        return torch.stack([rows[p] for p in paths]) if paths else torch.empty(0)

    def put(self, key: Hashable, paths: Sequence[Path], outputs: torch.Tensor) -> None:
        """Keep ``outputs`` (one row per path) under ``key``."""
        if len(paths) != len(outputs):
            raise ValueError(f"{len(outputs)} outputs for {len(paths)} paths")
        rows = self._passes.setdefault(key, {})
        self._passes.move_to_end(key)
        rows.update(zip(paths, outputs.unbind(0), strict=True))
        while len(self._passes) > self.max_passes:
            dropped, _ = self._passes.popitem(last=False)
            log.info("feature store: dropped the pass %s (more than %d kept)", dropped, self.max_passes)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._passes

    def keys(self) -> list[Hashable]:
        return list(self._passes)
