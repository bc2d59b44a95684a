"""What a selection strategy sees (:class:`PoolView`) and what it returns (:class:`Choice`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PoolView:
    """What the strategies see. ``features`` (N, D) and ``labelled`` (M, D) are L2-normalised frozen features;
    ``probabilities`` (N, K) the model's class probabilities (classification), ``ensemble`` (E, N) the trait
    predictions of E heads (traits); ``class_names`` name the K columns. ``head_inputs`` (N, D') are the pool's
    features as the head sees them (its input: BADGE's gradient embeddings are built on them); ``features`` when
    absent."""

    features: np.ndarray
    labelled: np.ndarray
    probabilities: np.ndarray | None = None
    ensemble: np.ndarray | None = None
    class_names: Sequence[str] = ()
    head_inputs: np.ndarray | None = None


@dataclass(frozen=True)
class Choice:
    """Chosen pool rows, best first, with a score each (higher = more worth labelling) and the reason in words."""

    indices: np.ndarray
    scores: np.ndarray
    reasons: list[str]
