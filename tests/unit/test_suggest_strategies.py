"""The selection strategies of ``data suggest`` on planted features: each must pick what it claims to pick."""

from __future__ import annotations

import numpy as np
import pytest

from plantpheno.errors import ArgumentError
from plantpheno.labelling.heads import ridge_ensemble, unit
from plantpheno.labelling.strategies import STRATEGIES, PoolView, check_strategy, select


def _probs(n: int, uncertain: list[int]) -> np.ndarray:
    """Sure of class 0 everywhere (99 %), torn between classes 0 and 1 at ``uncertain`` (51 / 49 %)."""
    p = np.tile([0.99, 0.005, 0.005], (n, 1))
    p[uncertain] = [0.51, 0.49, 0.0]
    return p


def _view(n: int = 40, **kwargs) -> PoolView:
    rng = np.random.default_rng(0)
    return PoolView(unit(rng.normal(size=(n, 8))), unit(rng.normal(size=(5, 8))), class_names=["a", "b", "c"],
                    **kwargs)


def test_margin_picks_the_boundary_points_and_says_which_classes():
    choice = select(_view(probabilities=_probs(40, [3, 17, 29])), 3, strategy="margin")
    assert sorted(choice.indices.tolist()) == [3, 17, 29]
    assert all("torn between a (51%) and b (49%)" in r for r in choice.reasons)
    assert np.all(np.diff(choice.scores) <= 0)  # best first


def test_entropy_picks_the_flattest_probabilities():
    p = _probs(40, [])
    p[[5, 11]] = [1 / 3, 1 / 3, 1 / 3]
    p[20] = [0.6, 0.3, 0.1]
    choice = select(_view(probabilities=p), 3, strategy="entropy")
    assert choice.indices[:2].tolist() in ([5, 11], [11, 5]) and choice.indices[2] == 20
    assert choice.scores[0] == pytest.approx(1.0)


def test_kcenter_picks_the_far_cluster_first_then_covers_the_rest():
    rng = np.random.default_rng(1)
    near = rng.normal(0, 0.05, size=(30, 4)) + [1, 0, 0, 0]
    far = rng.normal(0, 0.05, size=(5, 4)) + [0, 0, 0, 3]
    other = rng.normal(0, 0.05, size=(5, 4)) + [0, 3, 0, 0]
    labelled = rng.normal(0, 0.05, size=(6, 4)) + [1, 0, 0, 0]
    view = PoolView(np.vstack([near, far, other]), labelled)
    choice = select(view, 2, strategy="kcenter")
    picked = set(choice.indices.tolist())
    # one from each far group, none from the group the labelled images already cover
    assert len(picked & set(range(30, 35))) == 1 and len(picked & set(range(35, 40))) == 1
    assert choice.scores[0] > 2.5


def test_cluster_margin_spreads_its_picks_over_the_uncertain_regions():
    rng = np.random.default_rng(2)
    group_a = rng.normal(0, 0.01, size=(10, 4)) + [1, 0, 0, 0]
    group_b = rng.normal(0, 0.01, size=(10, 4)) + [0, 1, 0, 0]
    sure = rng.normal(0, 0.01, size=(20, 4)) + [0, 0, 1, 0]
    p = _probs(40, list(range(20)))
    p[:10] = [0.50, 0.50, 0.0]  # group a a shade more uncertain than b: margin takes both from a
    view = PoolView(np.vstack([group_a, group_b, sure]), np.zeros((1, 4)), probabilities=p, class_names="abc")
    assert set(select(view, 2, strategy="margin").indices.tolist()) <= set(range(10))
    mixed = select(view, 2, strategy="cluster-margin").indices.tolist()
    assert len(set(mixed) & set(range(10))) == 1 and len(set(mixed) & set(range(10, 20))) == 1


def test_disagreement_picks_where_the_heads_disagree():
    ensemble = np.tile(np.linspace(3, 12, 40), (5, 1))
    ensemble[:, [7, 33]] += np.array([[-2], [1], [0], [2], [-1]])
    choice = select(_view(ensemble=ensemble), 2, strategy="disagreement")
    assert sorted(choice.indices.tolist()) == [7, 33]
    assert "5 heads" in choice.reasons[0]


def test_ridge_ensemble_disagrees_more_far_from_the_labelled_images():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 6))
    y = x @ rng.normal(size=6) + rng.normal(0, 0.3, 40)
    pool = np.vstack([rng.normal(size=(20, 6)), rng.normal(size=(20, 6)) * 8])
    spread = ridge_ensemble(x, y, pool).std(axis=0)
    assert spread[20:].mean() > 2 * spread[:20].mean()


def test_random_is_reproducible_and_never_picks_twice():
    view = _view(probabilities=_probs(40, []))
    a, b = select(view, 20, strategy="random", seed=4), select(view, 20, strategy="random", seed=4)
    assert a.indices.tolist() == b.indices.tolist() and len(set(a.indices.tolist())) == 20


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_every_strategy_returns_the_budget_distinct_rows(strategy):
    regression = strategy == "disagreement"
    ensemble = np.random.default_rng(5).normal(size=(5, 40)) if regression else None
    view = _view(probabilities=None if regression else _probs(40, [1, 2]), ensemble=ensemble)
    choice = select(view, 7, strategy=strategy)
    assert len(choice.indices) == len(set(choice.indices.tolist())) == len(choice.reasons) == len(choice.scores) == 7


def test_a_strategy_that_does_not_fit_the_task_is_refused_with_the_ones_that_do():
    with pytest.raises(ArgumentError, match="predicts a trait: use one of random, kcenter, disagreement"):
        check_strategy("margin", regression=True)
    with pytest.raises(ArgumentError, match="for trait"):
        check_strategy("disagreement", regression=False)
    with pytest.raises(ArgumentError, match="expected one of random, margin"):
        check_strategy("badge", regression=False)
