"""How different two image sources look: the background-shortcut check's border classifier
(:mod:`plantpheno.data.doctor.shortcut`) asked to tell the images of one source from those of another.

An out-of-fold accuracy near the larger source's share means the borders (background, light, camera) look alike;
near 1 means every picture gives away where it was taken, the setting a model trained on one source never saw.
Only the border is seen (a 4-pixel frame of the image resized to 64 px), so a high figure says "other setting",
not "other plants".
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from plantpheno.data.doctor.folds import group_folds
from plantpheno.data.doctor.pixels import border_features
from plantpheno.data.doctor.shortcut import _ridge_scores, _wilson
from plantpheno.data.images import load_rgb

MAX_PER_SOURCE = 1000  # images per source at most (a random sample of a larger one)


def sources_apart(first: Sequence[Path], second: Sequence[Path], *, folds: int = 5, permutations: int = 99,
                  seed: int = 0) -> dict[str, Any]:
    """Out-of-fold accuracy of the border classifier at telling ``first`` from ``second`` (a dict with its 95 %
    Wilson interval, the majority baseline and a permutation p-value); images that cannot be read are skipped and
    counted. ``{"accuracy": None, "reason": ...}`` when there are too few images."""
    rng = np.random.default_rng(seed)
    # as many of each (at most MAX_PER_SOURCE): the accuracy then reads against 50 % whatever the sources' sizes
    per_source = min(len(first), len(second), MAX_PER_SOURCE)
    picked = [_sample(list(paths), per_source, rng) for paths in (first, second)]
    features, labels, unreadable = [], [], 0
    for label, paths in enumerate(picked):
        for path in paths:
            try:
                features.append(border_features(load_rgb(path, min_side=64)))
            except Exception:  # noqa: BLE001 - an unreadable image is counted, not fatal: this is a side measure
                unreadable += 1
                continue
            labels.append(label)
    y = np.array(labels, dtype=np.int64)
    counts = np.bincount(y, minlength=2)
    if counts.min() < 10:
        return {"accuracy": None, "reason": f"too few readable images ({counts[0]} and {counts[1]}; needs 10 each)",
                "unreadable": unreadable}
    X = np.asarray(features, dtype=np.float64)
    X = np.concatenate([X, X ** 2], axis=1)
    split = group_folds(y, [str(i) for i in range(len(y))], folds=folds, seed=seed)
    perms = [rng.permutation(len(y)) for _ in range(permutations)]
    scores = _ridge_scores(X, np.eye(2)[y], split, perms, regression=False)
    observed, null = float(scores[0]), scores[1:]
    low, high = _wilson(observed, len(y))
    return {"accuracy": observed, "ci95": [low, high], "majority": float(counts.max() / len(y)),
            "p_value": float((1 + np.sum(null >= observed - 1e-12)) / (len(null) + 1)) if len(null) else None,
            "images": [int(counts[0]), int(counts[1])], "folds": len(split), "permutations": len(null),
            "unreadable": unreadable,
            "method": "ridge classifier on border features (4-pixel frame at 64 px), out-of-fold"}


def _sample(paths: list[Path], count: int, rng: np.random.Generator) -> list[Path]:
    if len(paths) <= count:
        return paths
    return [paths[i] for i in sorted(rng.choice(len(paths), count, replace=False))]
