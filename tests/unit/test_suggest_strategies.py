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
        check_strategy("least-confidence", regression=False)


def _two_uncertain_clusters() -> PoolView:
    """Two tight clusters the model is torn on (a: classes 0/1, b: classes 0/2) and a larger one it is sure of."""
    rng = np.random.default_rng(6)
    features = np.vstack([rng.normal(0, 0.01, size=(10, 4)) + [1, 0, 0, 0],
                          rng.normal(0, 0.01, size=(10, 4)) + [0, 1, 0, 0],
                          rng.normal(0, 0.01, size=(20, 4)) + [0, 0, 1, 0]])
    p = np.tile([0.98, 0.01, 0.01], (40, 1))
    p[:10] = [0.50, 0.50, 0.0]  # a a shade more uncertain than b: margin and entropy take all from a
    p[10:20] = [0.52, 0.0, 0.48]
    return PoolView(features, np.zeros((1, 4)), probabilities=p, class_names="abc")


def test_badge_picks_from_both_uncertain_clusters_where_margin_takes_one():
    view = _two_uncertain_clusters()
    assert set(select(view, 3, strategy="margin").indices.tolist()) <= set(range(10))
    for seed in range(10):  # k-means++ samples: every seed must cover both clusters
        picked = select(view, 3, strategy="badge", seed=seed).indices.tolist()
        assert len(set(picked) & set(range(10))) == 1 and len(set(picked) & set(range(10, 20))) == 1, (seed, picked)
    choice = select(view, 3, strategy="badge")
    assert choice.indices[0] < 10  # the longest gradient first: the most uncertain cluster
    assert "BADGE" in choice.reasons[0] and "best guess a at 50%" in choice.reasons[0]


def test_badge_is_deterministic_with_a_seed_and_varies_across_seeds():
    view = _view(probabilities=np.random.default_rng(7).dirichlet([1, 1, 1], size=40))
    runs = {seed: select(view, 10, strategy="badge", seed=seed).indices.tolist() for seed in range(5)}
    assert runs[3] == select(view, 10, strategy="badge", seed=3).indices.tolist()
    assert len({tuple(r) for r in runs.values()}) > 1


def test_badge_gradient_embedding_uses_the_head_inputs_and_never_builds_the_outer_product():
    """Distances from the two factors equal those of the explicit (p - onehot) x h embedding."""
    rng = np.random.default_rng(8)
    probs, inputs = rng.dirichlet([1, 1, 1], size=12), rng.normal(size=(12, 5))
    view = PoolView(unit(rng.normal(size=(12, 4))), np.zeros((1, 4)), probabilities=probs, head_inputs=inputs)
    factor = probs - np.eye(3)[probs.argmax(1)]
    explicit = np.einsum("nk,nd->nkd", factor, inputs).reshape(12, -1)
    choice = select(view, 2, strategy="badge")
    first = int(np.argmax((explicit ** 2).sum(1)))
    assert choice.indices[0] == first and choice.scores[0] == pytest.approx((explicit[first] ** 2).sum())
    second = choice.indices[1]
    assert choice.scores[1] == pytest.approx(((explicit[second] - explicit[first]) ** 2).sum())


@pytest.mark.parametrize("budget", [1, 39, 40])
def test_badge_budget_edges_and_a_pool_the_model_is_sure_of(budget):
    sure = np.tile([1.0, 0.0, 0.0], (40, 1))  # every gradient zero: no D^2 weight left, still budget distinct rows
    for probs in (sure, _probs(40, [4, 9])):
        choice = select(_view(probabilities=probs), budget, strategy="badge", seed=1)
        assert len(set(choice.indices.tolist())) == len(choice.reasons) == budget
        assert np.all(np.isfinite(choice.scores)) and np.all(choice.scores >= 0)


def test_badge_on_a_trait_weighs_features_by_the_ensembles_spread():
    rng = np.random.default_rng(9)
    features = np.vstack([rng.normal(0, 0.01, size=(10, 4)) + c for c in np.eye(4)])
    ensemble = np.tile(np.linspace(3, 12, 40), (5, 1))
    disagree = np.array([[-2.0], [1.0], [0.0], [2.0], [-1.0]])
    ensemble[:, :10] += disagree  # the heads disagree on clusters 0 and 2, agree on 1 and 3
    ensemble[:, 20:30] += 0.9 * disagree
    view = PoolView(features, np.zeros((1, 4)), ensemble=ensemble)
    for seed in range(10):  # the sure images all sit at the origin of the embedding: at most one of them is picked
        picked = select(view, 3, strategy="badge", seed=seed).indices.tolist()
        assert {0, 2} <= {i // 10 for i in picked}, (seed, picked)
    assert "the heads disagree" in select(view, 2, strategy="badge").reasons[0]
    check_strategy("badge", regression=True)
    check_strategy("badge", regression=False)


def test_the_default_strategy_follows_the_rounds_size():
    from plantpheno.labelling.suggest import default_strategy

    # the benchmark's choice on validation: margin in rounds of one image a class, typical-badge in larger ones
    assert default_strategy(False, 15, 15) == "margin"
    assert default_strategy(False, 1, 15) == "margin"
    assert default_strategy(False, 16, 15) == "typical-badge"
    assert default_strategy(False, 30, 15) == "typical-badge"
    assert default_strategy(True, 5, 0) == "badge"
    for name in ("margin", "typical-badge", "badge"):
        assert name in STRATEGIES
