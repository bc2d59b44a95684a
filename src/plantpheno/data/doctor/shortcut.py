"""Background shortcut: can the label be predicted from a thin strip along the image border alone?

Plant photos are often taken in sessions (one background, one light, one camera per class or per day), so
the background can carry the label: on PlantVillage a random forest on 8 background pixels reaches 49 %
where chance is 2.6 % (Noyan 2022). A model can then score by learning the photo setup. This check trains a
classifier on the border features of :func:`plantpheno.data.doctor.pixels.border_features` (a 4-pixel frame of
the image resized to 64 px: per-side colour means and spreads, corner colours, colour histograms) with
group-aware K-fold cross-validation, and reports its out-of-fold accuracy next to chance (1/K) and the
majority baseline, with a permutation p-value; for a trait, the out-of-fold R² against predicting the mean.

The classifier is a ridge (least-squares) classifier on the features and their squares: its fit is one
linear solve per fold, and every label permutation reuses that solve, so 199 permutations cost about as much
as one logistic-regression fit. On the PlantVillage subset it reaches 60 % against 63 % for a logistic
regression on the same features (5-fold, measured while writing this).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from plantpheno.data.doctor.catalog import Entry
from plantpheno.data.doctor.findings import Finding
from plantpheno.data.doctor.folds import group_folds, single_threaded_blas

MAX_IMAGES = 5000  # a larger data set is checked on a class-stratified random sample of this size
RIDGE = 1.0
MARGIN = 0.10  # warn when the border predicts at least 10 points better than chance and the majority class
ALPHA = 0.01  # ... and the permutation p-value is below this
_CHUNK = 32  # label permutations per matrix product


def shortcut_finding(entries: Sequence[Entry], fold_keys: Sequence[str], *, regression: bool, folds: int,
                     permutations: int, seed: int) -> tuple[list[Finding], str | None]:
    """The background-shortcut finding (a warning when the border predicts the label far above chance, a note
    otherwise), or no finding and the reason it could not run."""
    rows = [i for i, e in enumerate(entries) if e.stats is not None]
    rng = np.random.default_rng(seed)
    if len(rows) > MAX_IMAGES:
        rows = sorted(rng.choice(rows, MAX_IMAGES, replace=False).tolist())
    if len(rows) < 20:
        return [], f"too few images ({len(rows)}; needs 20)"
    features = np.array([entries[i].stats.border for i in rows], dtype=np.float64)
    X = np.concatenate([features, features ** 2], axis=1)
    keys = [fold_keys[i] for i in rows]
    if regression:
        y = np.array([float(entries[i].target) for i in rows])
        Y = ((y - y.mean()) / (y.std() or 1.0))[:, None]
        labels = None
    else:
        names, labels = np.unique([str(entries[i].target) for i in rows], return_inverse=True)
        Y = np.eye(len(names))[labels]
    split = group_folds(labels, keys, folds=folds, seed=seed)
    if not split:
        return [], "fewer than 2 groups of images to cross-validate"
    perms = [rng.permutation(len(rows)) for _ in range(permutations)]
    scores = _ridge_scores(X, Y, split, perms, regression=regression)
    observed, null = scores[0], scores[1:]
    p = float((1 + np.sum(null >= observed - 1e-12)) / (len(null) + 1)) if len(null) else math.nan
    return [_finding(observed, null, p, labels, len(rows), len(entries), len(split), regression)], None


def _ridge_scores(X: np.ndarray, Y: np.ndarray, split: list[tuple[np.ndarray, np.ndarray]],
                  perms: list[np.ndarray], *, regression: bool) -> np.ndarray:
    """Out-of-fold accuracy (classes) or R² (trait) of a ridge fit, for the real labels and each permutation."""
    sets = [np.arange(len(Y)), *perms]
    score = np.zeros(len(sets))
    with single_threaded_blas():
        for train, test in split:
            mu, sd = X[train].mean(axis=0), X[train].std(axis=0) + 1e-6
            Xt, Xs = (X[train] - mu) / sd, (X[test] - mu) / sd
            solve = np.linalg.solve(Xt.T @ Xt + RIDGE * np.eye(X.shape[1]), Xt.T)  # (features, train)
            for start in range(0, len(sets), _CHUNK):
                chunk = sets[start:start + _CHUNK]
                Yt = np.concatenate([Y[s][train] for s in chunk], axis=1)
                offset = Yt.mean(axis=0)
                pred = (Xs @ (solve @ (Yt - offset)) + offset).reshape(len(test), len(chunk), Y.shape[1])
                truth = np.stack([Y[s][test] for s in chunk], axis=1)
                if regression:
                    score[start:start + len(chunk)] += ((pred - truth) ** 2).sum(axis=(0, 2))
                else:
                    score[start:start + len(chunk)] += (pred.argmax(axis=2) == truth.argmax(axis=2)).sum(axis=0)
    if regression:  # R² against the mean: 1 - SSE / SST (Y is standardised: SST = N)
        return 1.0 - score / float(((Y - Y.mean()) ** 2).sum())
    return score / len(Y)


def _wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


_FIX = ("test the model on photos from another setup (other background, light, camera or site) before trusting "
        "its score; vary or remove the background (segment or crop to the plant, shoot every class on every "
        "background); until then, read the test score as an upper bound.")


def _finding(observed: float, null: np.ndarray, p: float, labels: np.ndarray | None, n: int, total: int,
             folds: int, regression: bool) -> Finding:
    sample = f" (a random sample of {n} of {total})" if n < total else ""
    perms = f"permutation p = {p:.3g} over {len(null)} label shuffles" if len(null) else "no permutation test"
    how = (f"using only a 4-pixel frame around each image (resized to 64 px), {folds}-fold group-aware "
           f"cross-validation on {n} images{sample}")
    if regression:
        far = p < ALPHA and observed >= MARGIN
        message = (f"a ridge regression {how} explains R² = {observed:.2f} of the trait, against 0 for predicting "
                   f"the mean ({perms}).")
        details = {"r2": observed, "baseline_r2": 0.0, "p_value": p, "permutations": len(null), "images": n,
                   "folds": folds, "tags": {"background_r2": f"{observed:.3f}", "background_p": f"{p:.3g}"}}
    else:
        counts = np.bincount(labels)
        chance, majority = 1 / len(counts), counts.max() / n
        low, high = _wilson(observed, n)
        far = p < ALPHA and observed >= max(chance, majority) + MARGIN
        message = (f"a classifier {how} predicts {observed:.1%} of the labels (95 % CI {low:.1%} to {high:.1%}), "
                   f"where chance is {chance:.1%} and always answering the largest class {majority:.1%} "
                   f"({perms}).")
        details = {"accuracy": observed, "ci95": [low, high], "chance": chance, "majority": majority,
                   "p_value": p, "permutations": len(null), "null_mean": float(null.mean()) if len(null) else None,
                   "images": n, "folds": folds,
                   "tags": {"background_accuracy": f"{observed:.3f}", "background_chance": f"{chance:.3f}",
                            "background_p": f"{p:.3g}"}}
    if far:
        return Finding("warning", "background_shortcut",
                       "The image border alone predicts the label: " + message + " The background or photo setup "
                       "carries label information, and a model can score by learning it instead of the plant.",
                       1, _FIX, details=details)
    return Finding("info", "background_shortcut", "No strong background shortcut: " + message,
                   0, "nothing to do.", details=details)
