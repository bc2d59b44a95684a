"""TypiClust and the budget-aware switch of ``data suggest`` on planted features: what each claims to pick."""

from __future__ import annotations

import numpy as np
import pytest

from plantpheno.labelling import typical
from plantpheno.labelling.strategies import PoolView, check_strategy, select
from plantpheno.labelling.typical import typicality


def _clusters(sizes: list[int], seed: int = 0, spread: float = 0.05) -> tuple[np.ndarray, list[int]]:
    """Tight groups around the axes of an 8-d space, each with its exact centre as its last image."""
    rng = np.random.default_rng(seed)
    groups = [np.vstack([rng.normal(0, spread, size=(n - 1, 8)) + 3 * np.eye(8)[c], 3 * np.eye(8)[c]])
              for c, n in enumerate(sizes)]
    centres = list(np.cumsum(sizes) - 1)
    return np.vstack(groups), centres


def test_typicality_is_highest_in_the_dense_middle_and_zero_alone():
    points, centres = _clusters([12])
    far = np.vstack([points, 3 * np.eye(8)[0] + 1.0])
    typ = typicality(far)
    assert int(np.argmax(typ)) == centres[0] and int(np.argmin(typ)) == len(far) - 1
    assert typicality(points[:1]).tolist() == [0.0]


def test_typiclust_picks_the_most_typical_image_of_every_uncovered_cluster_largest_first():
    points, centres = _clusters([8, 14, 10, 12])
    view = PoolView(points, np.zeros((0, 8)))
    choice = select(view, 4, strategy="typiclust", seed=0)
    assert choice.indices.tolist() == [centres[1], centres[3], centres[2], centres[0]]  # 14, 12, 10, 8 images
    assert "the most typical image of a group of 14 similar images with no labelled image yet" in choice.reasons[0]
    assert np.all(choice.scores > 0)


def test_typiclust_leaves_the_clusters_the_labelled_images_cover_for_last():
    points, centres = _clusters([10, 10, 10, 10])
    labelled = np.vstack([points[0] + 0.01, points[10] + 0.01])  # in the first two groups
    view = PoolView(points, labelled)
    choice = select(view, 2, strategy="typiclust", seed=1)  # 2 labelled + 2 picks: one k-means cluster a group
    assert sorted(choice.indices.tolist()) == [centres[2], centres[3]]
    assert all("no labelled image yet" in r for r in choice.reasons)


def test_typiclust_takes_outliers_only_when_the_real_clusters_are_spent():
    points, _ = _clusters([10, 3, 10])  # the middle group: 3 images, an outlier group (at most MIN_CLUSTER)
    view = PoolView(points, np.zeros((0, 8)))
    picked = select(view, 3, strategy="typiclust", seed=0).indices.tolist()
    assert [10 <= i < 13 for i in picked] == [False, False, True]
    every = select(view, len(points), strategy="typiclust", seed=0)  # budget = the whole pool
    assert sorted(every.indices.tolist()) == list(range(len(points)))


def test_typiclust_is_deterministic_with_a_seed_and_covers_tiny_pools():
    points = np.random.default_rng(3).normal(size=(30, 8))
    view = PoolView(points, points[:4] + 0.1)
    assert (select(view, 6, strategy="typiclust", seed=5).indices.tolist()
            == select(view, 6, strategy="typiclust", seed=5).indices.tolist())
    for n in (1, 2, 3):  # fewer images than the neighbours or the minimum cluster size
        tiny = PoolView(points[:n], np.zeros((0, 8)))
        assert sorted(select(tiny, n, strategy="typiclust").indices.tolist()) == list(range(n))
    with pytest.raises(AssertionError):  # an empty pool or a budget above it never reaches a strategy
        select(PoolView(points[:0], points), 1, strategy="typiclust")
    check_strategy("typiclust", regression=True)


def _flat(n: int, classes: int) -> np.ndarray:
    return np.full((n, classes), 1.0 / classes)


def test_probcover_covers_the_largest_uncovered_group_first_then_draws_at_random():
    points, _ = _clusters([8, 14, 10, 12])
    labelled = points[[20]] + 0.01  # covers the second group (rows 8-21), the largest
    view = PoolView(points, labelled, probabilities=_flat(44, 4))
    choice = select(view, 5, strategy="probcover", seed=0)
    groups = [int(np.searchsorted([8, 22, 32, 44], i, side="right")) for i in choice.indices[:3]]
    assert groups == [3, 2, 0]  # 12, 10 and 8 images; the labelled image's group is covered already
    assert choice.scores[:3].tolist() == [12.0, 10.0, 8.0] and "covers 12 image(s)" in choice.reasons[0]
    assert all("drawn at random" in r for r in choice.reasons[3:]) and choice.scores[3:].tolist() == [0.0, 0.0]
    again = select(view, 5, strategy="probcover", seed=0)
    assert again.indices.tolist() == choice.indices.tolist() and len(set(choice.indices.tolist())) == 5


def test_probcover_edges_budget_equals_the_pool_and_tiny_pools():
    points, _ = _clusters([6, 6])
    every = select(PoolView(points, np.zeros((0, 8)), probabilities=_flat(12, 2)), 12, strategy="probcover")
    assert sorted(every.indices.tolist()) == list(range(12))
    one = select(PoolView(points[:1], points[1:3], probabilities=_flat(1, 5)), 1, strategy="probcover")
    assert one.indices.tolist() == [0]
    with pytest.raises(Exception, match="predicts a trait"):
        check_strategy("probcover", regression=True)


def _probs(n: int, uncertain: list[int]) -> np.ndarray:
    p = np.tile([0.98, 0.01, 0.01], (n, 1))
    p[uncertain] = [0.5, 0.5, 0.0]
    return p


def test_the_switch_labels_typical_images_up_to_the_mark_then_uncertain_ones(monkeypatch):
    monkeypatch.setattr(typical, "TYPICAL_PER_CLASS", 4)  # 3 classes: TypiClust up to 12 labelled images
    points, centres = _clusters([10, 10, 10, 10])
    probs = _probs(40, [5, 25, 33])
    few = PoolView(points, points[[1, 2, 11, 12, 21, 22, 31, 32, 3]] + 0.01, probabilities=probs, class_names="abc")
    choice = select(few, 6, strategy="typical-margin", seed=0)  # 9 labelled: 3 typical, then 3 by margin
    assert all("TypiClust" in r for r in choice.reasons[:3]) and set(choice.indices[:3].tolist()) <= set(centres)
    assert sorted(choice.indices[3:].tolist()) == [5, 25, 33] and "torn between" in choice.reasons[3]
    many = PoolView(points, points[:12] + 0.01, probabilities=probs, class_names="abc")
    assert (select(many, 5, strategy="typical-margin").indices.tolist()
            == select(many, 5, strategy="margin").indices.tolist())
    none = PoolView(points, np.zeros((0, 8)), probabilities=probs, class_names="abc")
    assert all("TypiClust" in r for r in select(none, 8, strategy="typical-badge").reasons)
    mixed = select(few, 40 - 0, strategy="typical-badge", seed=2)  # budget = the whole pool: every row once
    assert sorted(mixed.indices.tolist()) == list(range(40))


def test_the_switch_needs_class_probabilities():
    with pytest.raises(Exception, match="predicts a trait"):
        check_strategy("typical-margin", regression=True)


@pytest.mark.parametrize("name", ["typiclust", "probcover", "typical-margin", "typical-badge"])
def test_the_cli_parses_every_strategy(name):
    from plantpheno.cli import build_parser
    from plantpheno.cli.suggest_cmd import STRATEGY_NAMES
    from plantpheno.labelling.strategies import STRATEGIES

    assert set(STRATEGY_NAMES) == set(STRATEGIES)
    args = build_parser().parse_args(["data", "suggest", "run", "--pool", "new/", "--budget", "3", "--strategy", name])
    assert args.strategy == name
