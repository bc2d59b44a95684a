"""Likely label errors, and near duplicates that only a network sees (crops, small rotations), from frozen
pretrained features (computed by :mod:`plantpheno.training.doctor_features`: data never imports models).

Label errors follow confident learning (Northcutt et al. 2021): out-of-sample class probabilities from a
group-aware K-fold logistic regression on the features, ranked by cleanlab's ``find_label_issues`` (self-
confidence of the given label among the issues it finds). Each is listed with its given and suggested label.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from plantpheno.data.doctor.catalog import Entry
from plantpheno.data.doctor.findings import Finding
from plantpheno.data.doctor.folds import group_folds, single_threaded_blas

LOGISTIC_C = 0.5  # inverse L2 strength on standardised features
FEATURE_SIMILARITY = 0.95  # frozen-feature cosine that counts as the same picture (see docs/guide/data-checks.md)


def out_of_sample_probabilities(features: np.ndarray, labels: np.ndarray, fold_keys: Sequence[str], *, folds: int,
                                seed: int) -> np.ndarray:
    """(N, K) class probabilities of each image from a logistic regression that never saw it (nor its group)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    k = int(labels.max()) + 1
    probs = np.full((len(labels), k), 1.0 / k)
    with single_threaded_blas(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings: the ranking, not the optimum, matters here
        for train, test in group_folds(labels, fold_keys, folds=folds, seed=seed):
            model = make_pipeline(StandardScaler(), LogisticRegression(C=LOGISTIC_C, max_iter=300))
            model.fit(features[train], labels[train])
            fold = np.full((len(test), k), 1e-6)
            fold[:, model[-1].classes_] = model.predict_proba(features[test])
            probs[test] = fold / fold.sum(axis=1, keepdims=True)
    return probs


def label_error_findings(entries: Sequence[Entry], features: np.ndarray, fold_keys: Sequence[str], *, folds: int,
                         seed: int) -> tuple[list[Finding], dict[str, float]]:
    """The likely label errors among ``entries`` (one row of ``features`` each), and the out-of-sample accuracy
    of the probabilities they come from (how far to trust the ranking)."""
    from cleanlab.filter import find_label_issues

    names, labels = np.unique([str(e.target) for e in entries], return_inverse=True)
    counts = np.bincount(labels)
    keep = counts[labels] >= folds  # a class needs an image in every fold to be predicted out of sample
    if keep.sum() < 2 * folds or len(np.unique(labels[keep])) < 2:
        return [], {}
    kept = np.flatnonzero(keep)
    _, local = np.unique(labels[kept], return_inverse=True)
    present = np.unique(labels[kept])
    probs = out_of_sample_probabilities(features[kept], local, [fold_keys[i] for i in kept], folds=folds, seed=seed)
    accuracy = float((probs.argmax(axis=1) == local).mean())
    issues = find_label_issues(local, probs, filter_by="prune_by_noise_rate",
                               return_indices_ranked_by="self_confidence")
    figures = {"oof_accuracy": accuracy, "images": len(kept), "classes": len(present)}
    if not len(issues):
        return [Finding("info", "label_errors",
                        f"no likely label errors among {len(kept)} images (out-of-sample accuracy of the frozen-"
                        f"feature classifier {accuracy:.1%}).", 0, "nothing to do.", details=figures)], figures
    rows = [kept[i] for i in issues]
    suggested = [str(names[present[probs[i].argmax()]]) for i in issues]
    # the out-of-sample probabilities are one classifier's disagreement with the label, not a certainty: worded so
    given_p = [float(probs[i][local[i]]) for i in issues]
    suggested_p = [float(probs[i].max()) for i in issues]
    notes = tuple(((f"given {entries[r].target!r}, suggested {s!r}: the checker gives the given label {pg:.0%} and "
                    f"{s!r} {ps:.0%}, {entries[r].split}"),)
                  for r, s, pg, ps in zip(rows, suggested, given_p, suggested_p))
    return [Finding(
        "warning", "label_errors",
        f"{len(issues)} of {len(kept)} images look mislabelled: a logistic regression on frozen pretrained "
        f"features, which never saw them (group-aware {folds}-fold), gives their label a low probability "
        f"(cleanlab, ranked most suspicious first; its out-of-sample accuracy is {accuracy:.1%}, so expect some "
        f"of these to be hard cases, not errors).",
        len(issues), "look at the listed images and correct the labels that are wrong; keep hard but correct ones.",
        files=tuple((str(entries[r].path),) for r in rows), file_notes=notes,
        details={**figures, "given": [str(entries[r].target) for r in rows], "suggested": suggested,
                 "given_probability": given_p, "suggested_probability": suggested_p,
                 "tags": {"label_errors": str(len(issues))}})], figures


def feature_duplicate_findings(entries: Sequence[Entry], features: np.ndarray, fold_keys: Sequence[str], *,
                               threshold: float = FEATURE_SIMILARITY) -> list[Finding]:
    """Pairs of pictures in different splits whose frozen features point the same way (cosine >= threshold) and
    that the pixel checks did not already group (a warning: different leaves also come this close)."""
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    pairs = []
    for start in range(0, len(unit), 1024):
        sims = unit[start:start + 1024] @ unit.T
        for a, b in zip(*np.nonzero(sims >= threshold)):
            i, j = start + int(a), int(b)
            if i < j and entries[i].split != entries[j].split and fold_keys[i] != fold_keys[j]:
                pairs.append((i, j, float(sims[a, b])))
    if not pairs:
        return []
    pairs.sort(key=lambda t: -t[2])
    return [Finding(
        "warning", "feature_duplicates",
        f"{len(pairs)} pair(s) of images in different splits look alike to a pretrained network (cosine similarity "
        f">= {threshold:g} of frozen features): crops, rotations or repeated shots of one leaf would leak; "
        f"different leaves sometimes come this close too.", len(pairs),
        "look at the pairs; give repeated shots of one plant or leaf one group (group column) so they share a split.",
        files=tuple((str(entries[i].path), str(entries[j].path)) for i, j, _ in pairs),
        file_notes=tuple((f"{entries[i].note()}, cosine {s:.3f}", entries[j].note()) for i, j, s in pairs),
        details={"threshold": threshold})]
