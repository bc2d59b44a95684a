"""Small heads on frozen features: a logistic regression (classes) and a ridge ensemble (traits), for the trait
strategies and the simulation benchmark. Features are standardised on the labelled images first."""

from __future__ import annotations

import warnings

import numpy as np

ENSEMBLE_SIZE = 5  # heads in the trait ensemble: enough for a stable spread, each fit costs milliseconds
RIDGE_ALPHAS = np.logspace(-1, 4, 11)  # chosen by leave-one-out on the labelled images (RidgeCV)


def ridge_ensemble(labelled: np.ndarray, values: np.ndarray, pool: np.ndarray, *, members: int = ENSEMBLE_SIZE,
                   seed: int = 0) -> np.ndarray:
    """Trait predictions ``(members, N)`` on ``pool`` of ridge regressions fitted on bootstrap resamples of the
    labelled images (the regularisation chosen once by leave-one-out on all of them)."""
    from sklearn.linear_model import Ridge, RidgeCV

    mean, std = labelled.mean(0), labelled.std(0) + 1e-6
    x, p = (labelled - mean) / std, (pool - mean) / std
    alpha = float(RidgeCV(alphas=RIDGE_ALPHAS).fit(x, values).alpha_) if len(values) > 2 else 1.0
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(members):
        rows = rng.integers(0, len(values), len(values))
        out.append(Ridge(alpha=alpha).fit(x[rows], values[rows]).predict(p))
    return np.stack(out)


def ridge_predict(labelled: np.ndarray, values: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """One ridge regression (leave-one-out regularisation) fitted on all labelled images, predicting ``pool``."""
    from sklearn.linear_model import RidgeCV

    mean, std = labelled.mean(0), labelled.std(0) + 1e-6
    return RidgeCV(alphas=RIDGE_ALPHAS).fit((labelled - mean) / std, values).predict((pool - mean) / std)


def logistic_probabilities(labelled: np.ndarray, labels: np.ndarray, pool: np.ndarray, *, classes: int,
                           c: float = 0.5) -> np.ndarray:
    """Class probabilities ``(N, classes)`` on ``pool`` of a logistic regression on the labelled images (classes
    without a labelled image get probability 0)."""
    from sklearn.linear_model import LogisticRegression

    mean, std = labelled.mean(0), labelled.std(0) + 1e-6
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence: a few hundred iterations rank well enough
        model = LogisticRegression(C=c, max_iter=300).fit((labelled - mean) / std, labels)
    probs = np.zeros((len(pool), classes))
    probs[:, model.classes_] = model.predict_proba((pool - mean) / std)
    return probs


def unit(features: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (cosine geometry for k-center and nearest neighbours)."""
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
