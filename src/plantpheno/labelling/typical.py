"""Strategies for a small labelled set: TypiClust, and the budget-aware switch from it to an uncertainty strategy.

With a handful of labels per class the model's own uncertainty is a poor guide (the head has barely learnt the
classes; uncertainty picks outliers and near-duplicates of the boundary), while the pretrained features already
group the images: labelling the most typical image of each group the labelled set does not cover yet teaches more
(Hacohen, Dekel & Weinshall 2022, "Active learning on a budget: opposite strategies suit high and low budgets").
Once a few labels per class are in, uncertainty wins again; :func:`switch_choice` changes over at a stated number
of labels per class (:data:`TYPICAL_PER_CLASS`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from plantpheno.labelling.view import Choice, PoolView

TYPICAL_NEIGHBOURS = 20  # k of the typicality: inverse mean distance to the k nearest images of the cluster (paper)
MIN_CLUSTER = 5  # clusters of at most this many images are outliers: picked from only when the others run dry
MAX_CLUSTERS = 500  # the paper's cap on |L| + B clusters (k-means cost grows with it)
# the switch: rounds are TypiClust until the labelled set holds this many images per class (on average), BADGE
# or margin after that; a round that crosses the mark is split. Chosen on the validation split of
# benchmarks/active_learning.py (see docs/guide/suggest.md)
TYPICAL_PER_CLASS = 5
PURITY = 0.95  # ProbCover's alpha: the share of the balls that must hold one k-means cluster only (paper)


def typicality(points: np.ndarray) -> np.ndarray:
    """1 / (mean Euclidean distance to the k nearest other points + 1e-5), k = min(TYPICAL_NEIGHBOURS, n // 2) as
    in the paper's code (a small cluster measures its density over half of itself); 0 for a single point."""
    n = len(points)
    k = min(TYPICAL_NEIGHBOURS, n // 2)
    if k == 0:
        return np.zeros(n)
    d = _pairwise(points, points)
    np.fill_diagonal(d, np.inf)
    nearest = np.partition(d, k - 1, axis=1)[:, :k]
    return 1.0 / (nearest.mean(axis=1) + 1e-5)


def _clusters(points: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    """k-means labels (one k-means++ start, in float32: 500 clusters of 1,570 x 1,280 features take about a second
    on one core; the paper's code switches to mini-batch k-means above 50 clusters, which was no faster here)."""
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=n_clusters, n_init=1, random_state=seed).fit_predict(points.astype(np.float32))


def typiclust_choice(view: PoolView, budget: int, rng: np.random.Generator) -> Choice:
    """TypiClust (Hacohen et al. 2022): k-means on the labelled and pool images into |L| + B clusters (at most
    :data:`MAX_CLUSTERS`); clusters are visited by fewest labelled images, then largest first (clusters of at most
    :data:`MIN_CLUSTER` images last), and each visit picks the cluster's most typical pool image; when every
    cluster has been visited, the round goes around again. Score = the pick's typicality."""
    points = np.vstack([view.labelled, view.features])
    n_labelled = len(view.labelled)
    n_clusters = max(1, min(n_labelled + budget, MAX_CLUSTERS, len(points)))
    labels = _clusters(points, n_clusters, int(rng.integers(2**31 - 1)))
    sizes = np.bincount(labels, minlength=n_clusters)
    covered = np.bincount(labels[:n_labelled], minlength=n_clusters)
    order = sorted(range(n_clusters), key=lambda c: (sizes[c] <= MIN_CLUSTER, covered[c], -sizes[c], c))
    members = [np.flatnonzero(labels[n_labelled:] == c) for c in range(n_clusters)]
    ranked = []  # per cluster: its pool images, most typical first
    for c in range(n_clusters):
        typ = typicality(points[n_labelled + members[c]]) if len(members[c]) else np.zeros(0)
        ranked.append((members[c][np.lexsort((members[c], -typ))], np.sort(typ)[::-1]))
    chosen: list[int] = []
    scores: list[float] = []
    reasons: list[str] = []
    taken = np.zeros(n_clusters, dtype=int)
    while len(chosen) < budget:
        for c in order:
            if len(chosen) == budget:
                break
            if taken[c] < len(ranked[c][0]):
                chosen.append(int(ranked[c][0][taken[c]]))
                scores.append(float(ranked[c][1][taken[c]]))
                reasons.append(f"the most typical image of a group of {sizes[c]} similar images with "
                               f"{_labelled_words(covered[c] + taken[c])} (TypiClust)")
                taken[c] += 1
    return Choice(np.array(chosen, dtype=int), np.array(scores), reasons)


def _labelled_words(n: int) -> str:
    return "no labelled image yet" if n == 0 else f"{n} labelled or picked already"


def probcover_choice(view: PoolView, budget: int, rng: np.random.Generator) -> Choice:
    """ProbCover (Yehuda et al. 2022, "Active learning through a covering lens"): every image covers the ball of
    radius delta around it; each pick is the pool image whose ball holds the most images no labelled image or
    earlier pick covers yet (greedy maximum coverage). delta is the largest radius at which :data:`PURITY` of the
    balls hold images of one k-means cluster only (as many clusters as the model has classes). Once everything is
    covered, the rest of the round is drawn at random, as in the paper. Score = the images the pick newly covers."""
    assert view.probabilities is not None, "probcover sizes its balls by the number of classes"
    points = np.vstack([view.labelled, view.features]).astype(np.float32)
    m = len(view.labelled)
    seed = int(rng.integers(2**31 - 1))
    delta = _pure_radius(points, _clusters(points, max(1, min(view.probabilities.shape[1], len(points))), seed))
    balls = _balls(points, delta)
    covered = np.zeros(len(points), dtype=bool)
    for i in range(m):
        covered[balls[i]] = True
    gain = np.array([np.count_nonzero(~covered[b]) for b in balls])
    gain[:m] = -len(points) - 1  # labelled: never picked (stays negative however often it is decremented)
    chosen: list[int] = []
    scores: list[float] = []
    reasons: list[str] = []
    for _ in range(budget):
        i = int(np.argmax(gain))
        if gain[i] <= 0:  # all covered: a uniform draw among the pool images left
            i = m + int(rng.choice(np.setdiff1d(np.arange(len(view.features)), np.array(chosen, dtype=int))))
            reasons.append(f"every image is within {delta:.2f} of a labelled image or a pick: drawn at random "
                           f"(ProbCover)")
        else:
            reasons.append(f"covers {gain[i]} image(s) no labelled image or earlier pick is near (within "
                           f"{delta:.2f}; ProbCover)")
        new = balls[i][~covered[balls[i]]]
        scores.append(float(len(new)))
        covered[new] = True
        if len(new):
            np.subtract.at(gain, np.concatenate([balls[c] for c in new]), 1)
        gain[i] = -len(points) - 1
        chosen.append(i - m)
    return Choice(np.array(chosen, dtype=int), np.array(scores), reasons)


def _pure_radius(points: np.ndarray, labels: np.ndarray, block: int = 1024) -> float:
    """The largest radius at which PURITY of the balls around the points hold one cluster only: a ball of radius
    d is pure while d <= the distance to the nearest point of another cluster, so the (1 - PURITY) quantile of
    those distances (inf with one cluster)."""
    nearest_other = np.full(len(points), np.inf)
    for start in range(0, len(points), block):
        d = _pairwise(points[start:start + block], points)
        d[labels[start:start + block, None] == labels[None, :]] = np.inf
        nearest_other[start:start + block] = d.min(axis=1)
    return float(np.quantile(nearest_other, 1.0 - PURITY))


def _balls(points: np.ndarray, delta: float, block: int = 1024) -> list[np.ndarray]:
    """For each point, the points strictly within ``delta`` of it (itself included)."""
    out: list[np.ndarray] = []
    for start in range(0, len(points), block):
        d = _pairwise(points[start:start + block], points)
        np.fill_diagonal(d[:, start:start + block], 0.0)
        out.extend(np.flatnonzero(row < delta) if np.isfinite(delta) else np.arange(len(points)) for row in d)
    return out


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sqrt(np.maximum((a ** 2).sum(1)[:, None] - 2 * a @ b.T + (b ** 2).sum(1)[None, :], 0.0))


Strategy = Callable[[PoolView, int, np.random.Generator], Choice]


def switch_choice(first: Strategy, after: Strategy, name: str) -> Strategy:
    """The budget-aware switch: ``first`` (TypiClust or ProbCover) for the part of the round that brings the labelled
    set to :data:`TYPICAL_PER_CLASS` images per class (classes = the model's), ``after`` (margin, say) for the rest,
    on the pool images ``first`` left. ``first``'s picks rank first."""

    def choose(view: PoolView, budget: int, rng: np.random.Generator) -> Choice:
        assert view.probabilities is not None, "the switch needs the model's class probabilities"
        classes = view.probabilities.shape[1]
        early = int(np.clip(TYPICAL_PER_CLASS * classes - len(view.labelled), 0, budget))
        if early == budget:
            return first(view, budget, rng)
        if early == 0:
            return after(view, budget, rng)
        one = first(view, early, rng)
        rest = np.setdiff1d(np.arange(len(view.features)), one.indices)
        sub = PoolView(view.features[rest], np.vstack([view.labelled, view.features[one.indices]]),
                       probabilities=view.probabilities[rest], class_names=view.class_names,
                       head_inputs=None if view.head_inputs is None else view.head_inputs[rest])
        two = after(sub, budget - early, rng)
        return Choice(np.concatenate([one.indices, rest[two.indices]]), np.concatenate([one.scores, two.scores]),
                      one.reasons + two.reasons)

    choose.__name__ = name.replace("-", "_")
    choose.__doc__ = f"{name}: the first strategy below {TYPICAL_PER_CLASS} labels per class, the second above."
    return choose
