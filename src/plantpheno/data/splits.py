"""Seeded, stratified train/val/test splits that keep every group inside one split.

Images of one plant (or tray, or date) are near-duplicates; letting them straddle train and test
inflates test scores. So whole groups are assigned, and the assignment is stratified by the group's
majority class (classification) or by quantile bin of its mean value (regression).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Literal

import numpy as np

from plantpheno.errors import DataError

_REGRESSION_BINS = 5


def assign_splits(targets: Sequence[str | float], groups: Sequence[str | None], *,
                  task: Literal["classification", "regression"], val_fraction: float,
                  test_fraction: float, seed: int) -> list[str]:
    """Return ``"train" | "val" | "test"`` for each sample (same order as ``targets``).

    A sample whose group is ``None`` forms a group of its own.
    """
    members: dict[str, list[int]] = defaultdict(list)
    for i, group in enumerate(groups):
        members[group if group is not None else f"\0sample{i}"].append(i)
    strata = _stratify(members, targets, task)
    rng = np.random.default_rng(seed)
    result = ["train"] * len(targets)
    sizes = {stratum: sum(len(members[g]) for g in gids) for stratum, gids in strata.items()}
    splittable = {stratum for stratum, gids in strata.items() if len(gids) > 1}  # one group stays in train
    quotas = {name: _quotas(sizes, splittable, fraction, rng)
              for name, fraction in (("test", test_fraction), ("val", val_fraction))}
    for stratum in sorted(strata):
        group_ids = sorted(strata[stratum])
        rng.shuffle(group_ids)
        wanted = {name: quotas[name][stratum] for name in ("test", "val")}
        for group_id, split in _allocate(group_ids, members, wanted):
            for i in members[group_id]:
                result[i] = split
    _check_nonempty(result, val_fraction, test_fraction, len(members))
    return result


def _stratify(members: dict[str, list[int]], targets: Sequence[str | float],
              task: str) -> dict[str, list[str]]:
    strata: dict[str, list[str]] = defaultdict(list)
    if task == "classification":
        for gid, idx in members.items():
            label = Counter(str(targets[i]) for i in idx).most_common(1)[0][0]
            strata[label].append(gid)
        return strata
    means = {gid: float(np.mean([float(targets[i]) for i in idx])) for gid, idx in members.items()}
    edges = np.quantile(list(means.values()), np.linspace(0, 1, _REGRESSION_BINS + 1)[1:-1])
    for gid, mean in means.items():
        strata[f"bin{int(np.searchsorted(edges, mean, side='right'))}"].append(gid)
    return strata


def _quotas(sizes: dict[str, int], splittable: set[str], fraction: float,
            rng: np.random.Generator) -> dict[str, int]:
    """Images per stratum for one split: each stratum's share rounded down, and the images this leaves
    of the overall share go to the strata with the largest remainders (ties at random). Rounding each
    stratum on its own would starve a split when there are many small classes: 100 classes of 3
    images would give 0 test images for a 15 % test fraction instead of 45."""
    names = sorted(sizes)
    exact = {name: fraction * sizes[name] for name in names}
    quota = {name: int(np.floor(exact[name] + 1e-9)) for name in names}
    extra = int(round(fraction * sum(sizes.values()))) - sum(quota.values())
    tiebreak = dict(zip(names, rng.random(len(names))))
    candidates = sorted((n for n in names if n in splittable), key=lambda n: (quota[n] - exact[n], tiebreak[n]))
    for name in candidates[:max(extra, 0)]:
        quota[name] += 1
    return quota


def _allocate(group_ids: list[str], members: dict[str, list[int]],
              targets: dict[str, float]) -> list[tuple[str, str]]:
    """Fill test, then val, up to their target number of images; the rest is train."""
    filled = {"test": 0, "val": 0}
    out = []
    for position, gid in enumerate(group_ids):
        size = len(members[gid])
        split = "train"
        remaining_groups = len(group_ids) - position
        for name in ("test", "val"):
            closer = abs(filled[name] + size - targets[name]) < abs(filled[name] - targets[name])
            # keep at least one group of each stratum for training
            if closer and remaining_groups > 1:
                split = name
                filled[name] += size
                break
        out.append((gid, split))
    return out


def _check_nonempty(result: list[str], val_fraction: float, test_fraction: float, n_groups: int) -> None:
    counts = Counter(result)
    for name, fraction in (("val", val_fraction), ("test", test_fraction)):
        if fraction > 0 and counts[name] == 0:
            raise DataError(
                f"too few images to make a {name} split: {len(result)} images in {n_groups} groups with "
                f"data.{name}_fraction={fraction}; add images, raise the fraction, or give a split column"
            )
    if counts["train"] == 0:
        raise DataError(f"no images left for training out of {len(result)}")
