"""Which unlabelled images to label next: selection strategies on frozen features (numpy and scikit-learn only).

Every strategy takes a :class:`PoolView` (the pool's features, the labelled images' features, and the model's
view of the pool: class probabilities, or the trait predictions of a small ensemble of heads) and a budget, and
returns a :class:`Choice`: the chosen pool rows in rank order, a score each and the reason in words.

scikit-activeml (BSD) implements these too, but it is not installed here and each strategy is a few lines on the
feature matrix; its query interface wants an estimator refitted per query, where these work on the run's own
predictions (see docs/guide/suggest.md).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from plantpheno.errors import ArgumentError
from plantpheno.labelling.typical import probcover_choice, switch_choice, typiclust_choice
from plantpheno.labelling.view import Choice, PoolView

CLASSIFICATION_ONLY = ("margin", "entropy", "cluster-margin", "probcover", "typical-margin", "typical-badge")
TRAIT_ONLY = ("disagreement",)
CLUSTER_PREFILTER = 10  # cluster-margin: k-means over the budget x this most uncertain images (Zhdanov 2019)


def _top(scores: np.ndarray, budget: int) -> np.ndarray:
    """The ``budget`` highest scores, best first (ties by row: deterministic)."""
    order = np.lexsort((np.arange(len(scores)), -scores))
    return order[:budget]


def _two_best(view: PoolView) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    probs = _probabilities(view)
    order = np.argsort(-probs, axis=1)[:, :2]
    rows = np.arange(len(probs))
    return order, probs[rows, order[:, 0]], probs[rows, order[:, 1]]


def _probabilities(view: PoolView) -> np.ndarray:
    assert view.probabilities is not None, "classification strategies need the model's probabilities"
    return view.probabilities


def _names(view: PoolView, k: int) -> str:
    return view.class_names[k] if k < len(view.class_names) else f"class {k}"


def random_choice(view: PoolView, budget: int, rng: np.random.Generator) -> Choice:
    """A uniform draw: the baseline every other strategy has to beat."""
    chosen = rng.choice(len(view.features), size=budget, replace=False)
    return Choice(chosen, np.zeros(budget), ["drawn at random (the baseline strategy)"] * budget)


def margin_choice(view: PoolView, budget: int, rng: np.random.Generator) -> Choice:
    """Smallest gap between the two most likely classes first (score = 1 - gap)."""
    order, p1, p2 = _two_best(view)
    scores = 1.0 - (p1 - p2)
    chosen = _top(scores, budget)
    reasons = [f"the model is torn between {_names(view, order[i, 0])} ({p1[i]:.0%}) and "
               f"{_names(view, order[i, 1])} ({p2[i]:.0%})" for i in chosen]
    return Choice(chosen, scores[chosen], reasons)


def entropy_choice(view: PoolView, budget: int, rng: np.random.Generator) -> Choice:
    """Most spread-out class probabilities first (entropy over its maximum, log K: 0 = sure, 1 = no idea)."""
    probs = _probabilities(view)
    scores = -(probs * np.log(np.clip(probs, 1e-12, 1.0))).sum(axis=1) / np.log(max(probs.shape[1], 2))
    chosen = _top(scores, budget)
    best = probs.argmax(axis=1)
    reasons = [f"the model's probabilities are spread (entropy {scores[i]:.2f} of 1; best guess "
               f"{_names(view, best[i])} at {probs[i, best[i]]:.0%})" for i in chosen]
    return Choice(chosen, scores[chosen], reasons)


def kcenter_choice(view: PoolView, budget: int, rng: np.random.Generator) -> Choice:
    """Greedy k-center (Sener & Savarese 2018): each pick is the pool image farthest from every labelled image and
    every image picked before it, so the batch covers the feature space (score = that distance)."""
    nearest = _distance_to(view.features, view.labelled)
    typical = float(np.median(nearest)) if len(nearest) else 0.0
    chosen, scores = [], []
    for _ in range(budget):
        i = int(np.argmax(nearest))
        chosen.append(i)
        scores.append(float(nearest[i]))
        nearest = np.minimum(nearest, _distance_to(view.features, view.features[i:i + 1]))
        nearest[i] = -1.0  # never picked twice
    reasons = [f"far from every labelled image and every earlier pick (feature distance {s:.2f}; the pool's "
               f"median distance to its nearest labelled image is {typical:.2f})" for s in scores]
    return Choice(np.array(chosen, dtype=int), np.array(scores), reasons)


def _distance_to(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Euclidean distance of each point to its nearest centre (inf without centres)."""
    if len(centres) == 0:
        return np.full(len(points), np.inf)
    best = np.full(len(points), np.inf)
    for start in range(0, len(centres), 2048):
        block = centres[start:start + 2048]
        sq = (points ** 2).sum(1)[:, None] - 2 * points @ block.T + (block ** 2).sum(1)[None, :]
        best = np.minimum(best, np.sqrt(np.maximum(sq, 0.0)).min(axis=1))
    return best


def cluster_margin_choice(view: PoolView, budget: int, rng: np.random.Generator) -> Choice:
    """Uncertainty and diversity in one batch (Zhdanov 2019, "diverse mini-batch active learning"): the
    ``CLUSTER_PREFILTER x budget`` smallest-margin images are grouped by k-means (weighted by uncertainty) into
    ``budget`` clusters, and the image nearest each cluster's centre is chosen, so the batch does not spend its
    labels on many near-identical uncertain images."""
    from sklearn.cluster import KMeans

    order, p1, p2 = _two_best(view)
    uncertainty = 1.0 - (p1 - p2)
    candidates = _top(uncertainty, min(len(uncertainty), CLUSTER_PREFILTER * budget))
    if len(candidates) <= budget:
        return margin_choice(view, budget, rng)
    points = view.features[candidates]
    kmeans = KMeans(n_clusters=budget, n_init=1, random_state=int(rng.integers(2**31 - 1)))
    kmeans.fit(points, sample_weight=uncertainty[candidates] + 1e-6)
    picked: list[int] = []
    for c in range(budget):
        members = np.flatnonzero(kmeans.labels_ == c)
        if len(members) == 0:
            continue
        d = ((points[members] - kmeans.cluster_centers_[c]) ** 2).sum(1)
        picked.append(int(candidates[members[np.argmin(d)]]))
    rest = [int(i) for i in candidates if int(i) not in set(picked)]  # empty clusters: fill by margin
    chosen = np.array((picked + rest)[:budget], dtype=int)
    chosen = chosen[np.argsort(-uncertainty[chosen], kind="stable")]
    reasons = [f"among the most uncertain (torn between {_names(view, order[i, 0])} {p1[i]:.0%} and "
               f"{_names(view, order[i, 1])} {p2[i]:.0%}) and unlike the other picks (one per k-means cluster)"
               for i in chosen]
    return Choice(chosen, uncertainty[chosen], reasons)


def disagreement_choice(view: PoolView, budget: int, rng: np.random.Generator) -> Choice:
    """Traits: the images on which a small ensemble of heads (trained on resamples of the labelled images)
    disagrees most (score = the spread of their predictions, in the trait's units)."""
    assert view.ensemble is not None, "disagreement needs the ensemble's predictions"
    spread = view.ensemble.std(axis=0)
    mean = view.ensemble.mean(axis=0)
    chosen = _top(spread, budget)
    reasons = [f"{len(view.ensemble)} heads trained on resamples of the labelled images disagree: "
               f"{mean[i]:.3g} +/- {spread[i]:.3g}" for i in chosen]
    return Choice(chosen, spread[chosen], reasons)


def badge_choice(view: PoolView, budget: int, rng: np.random.Generator) -> Choice:
    """BADGE (Ash et al. 2020): k-means++ seeding on the gradient embeddings of the head's last layer, so a batch
    is both uncertain (long gradients) and diverse (gradients that point different ways).

    Classes: the gradient of the cross-entropy at the predicted class (the pseudo-label) with respect to the last
    layer's weights is ``(p - onehot(argmax p)) x h``, the outer product with the head's input ``h`` (``p`` the
    calibrated probabilities; the temperature's 1/T factor is common to all and does not change the picks).
    Traits (the residual is unknown before labelling): ``spread x h``, the ensemble's spread standing in for the
    expected residual. The distances are computed from the two factors
    (``<a x h, b x g> = <a, b><h, g>``), so the K x D embedding is never built (score = the squared distance to
    the earlier picks at the time of the pick; the first pick, the longest gradient, scores its squared length)."""
    inputs = view.features if view.head_inputs is None else view.head_inputs
    if view.probabilities is not None:
        probs = view.probabilities
        best = probs.argmax(axis=1)
        factor = probs.copy()
        factor[np.arange(len(probs)), best] -= 1.0
    else:
        assert view.ensemble is not None, "badge needs the model's probabilities or the trait ensemble"
        factor = view.ensemble.std(axis=0)[:, None]
    a2, h2 = (factor ** 2).sum(1), (inputs ** 2).sum(1)
    length2 = a2 * h2  # squared gradient length per image
    nearest = np.full(len(inputs), np.inf)
    chosen: list[int] = []
    scores: list[float] = []
    for _ in range(budget):
        if not chosen:
            i = int(np.argmax(length2))
            scores.append(float(length2[i]))
        else:
            weights = np.maximum(nearest, 0.0)
            weights[chosen] = 0.0
            total = weights.sum()
            if total > 0:
                i = int(rng.choice(len(weights), p=weights / total))
            else:  # every image left sits on a pick (all gradients zero, say): the longest gradient next
                rest = length2.copy()
                rest[chosen] = -np.inf
                i = int(_top(rest, 1)[0])
            scores.append(float(weights[i]))
        chosen.append(i)
        d2 = length2 + length2[i] - 2.0 * (factor @ factor[i]) * (inputs @ inputs[i])
        nearest = np.minimum(nearest, d2)
    return Choice(np.array(chosen, dtype=int), np.array(scores), _badge_reasons(view, chosen, factor))


def _badge_reasons(view: PoolView, chosen: list[int], factor: np.ndarray) -> list[str]:
    if view.probabilities is None:
        return [f"the heads disagree (spread {abs(float(factor[i, 0])):.3g}) and its features are unlike the other "
                f"picks' (BADGE: k-means++ on gradient embeddings)" for i in chosen]
    probs = view.probabilities
    best = probs.argmax(axis=1)
    return [f"the model is unsure (best guess {_names(view, best[i])} at {probs[i, best[i]]:.0%}) and its gradient "
            f"is unlike the other picks' (BADGE: k-means++ on gradient embeddings)" for i in chosen]


STRATEGIES: dict[str, Callable[[PoolView, int, np.random.Generator], Choice]] = {
    "random": random_choice, "margin": margin_choice, "entropy": entropy_choice, "kcenter": kcenter_choice,
    "cluster-margin": cluster_margin_choice, "disagreement": disagreement_choice, "badge": badge_choice,
    "typiclust": typiclust_choice, "probcover": probcover_choice,
    "typical-margin": switch_choice(typiclust_choice, margin_choice, "typical-margin"),
    "typical-badge": switch_choice(typiclust_choice, badge_choice, "typical-badge"),
}


def check_strategy(strategy: object, *, regression: bool) -> str:
    """``strategy`` if it is a known strategy that fits the task."""
    if not isinstance(strategy, str) or strategy not in STRATEGIES:
        raise ArgumentError(f"strategy: got {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    if regression and strategy in CLASSIFICATION_ONLY:
        raise ArgumentError(f"strategy {strategy!r} ranks class probabilities, and this run predicts a trait: use "
                            f"one of {', '.join(s for s in STRATEGIES if s not in CLASSIFICATION_ONLY)}")
    if not regression and strategy in TRAIT_ONLY:
        raise ArgumentError(f"strategy {strategy!r} is for trait (regression) runs: use one of "
                            f"{', '.join(s for s in STRATEGIES if s not in TRAIT_ONLY)}")
    return strategy


def select(view: PoolView, budget: int, *, strategy: str, seed: int = 0) -> Choice:
    """The ``budget`` pool images ``strategy`` would label next (``budget`` <= the pool: checked by the caller)."""
    assert 0 < budget <= len(view.features), (budget, len(view.features))
    return STRATEGIES[strategy](view, budget, np.random.default_rng(seed))
