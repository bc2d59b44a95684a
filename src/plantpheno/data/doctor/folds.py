"""Group-aware K-fold splits for the out-of-sample checks (background shortcut, label errors), and a guard
against BLAS threads fighting over a busy machine's cores."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np


def group_folds(targets: Sequence[int] | np.ndarray | None, groups: Sequence[str], *, folds: int,
                seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) index arrays with every group (a plant, or a picture and its copies) inside one fold.

    With class ``targets`` the folds are stratified as far as the groups allow, the way scikit-learn's
    StratifiedGroupKFold does it: groups in random order, those with the most uneven class mix first, each to
    the fold where the spread of every class's share across folds stays smallest (ties: the smaller fold).
    Without targets, largest groups first, each to the emptiest fold."""
    _, group_ids = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
    n_groups = int(group_ids.max()) + 1 if len(group_ids) else 0
    folds = min(folds, n_groups)
    if folds < 2:
        return []
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_groups)
    sizes = np.bincount(group_ids, minlength=n_groups)
    fold_of_group = np.empty(n_groups, dtype=np.int64)
    if targets is None:
        load = np.zeros(folds)
        for g in order[np.argsort(-sizes[order], kind="stable")]:
            fold_of_group[g] = int(np.argmin(load))
            load[fold_of_group[g]] += sizes[g]
    else:
        y = np.asarray(targets, dtype=np.int64)
        per_group = np.zeros((n_groups, int(y.max()) + 1))
        np.add.at(per_group, (group_ids, y), 1)
        totals = per_group.sum(axis=0)
        per_fold = np.zeros((folds, per_group.shape[1]))
        fold_sizes = np.zeros(folds)
        for g in order[np.argsort(-per_group[order].std(axis=1), kind="stable")]:
            shares = per_fold / totals  # (fold, class): each fold's share of each class
            trial = (per_fold + per_group[g]) / totals  # row k: fold k's shares if g went there
            s1 = shares.sum(axis=0) - shares + trial  # row k: sums over folds if g went to fold k
            s2 = (shares ** 2).sum(axis=0) - shares ** 2 + trial ** 2
            spread = np.sqrt(np.maximum(s2 / folds - (s1 / folds) ** 2, 0)).mean(axis=1)
            best = np.flatnonzero(np.isclose(spread, spread.min()))
            k = int(best[np.argmin(fold_sizes[best])])
            fold_of_group[g] = k
            per_fold[k] += per_group[g]
            fold_sizes[k] += sizes[g]
    fold = fold_of_group[group_ids]
    return [(np.flatnonzero(fold != k), np.flatnonzero(fold == k)) for k in range(folds) if (fold == k).any()]


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """The checks' matrix products are small: BLAS threads only spin against each other on a busy machine
    (a 5-fold logistic regression took 145 s with 2 threads against 3 s with 1, with other jobs running)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # not installed (it comes with scikit-learn): nothing to limit
        yield
        return
    with threadpool_limits(1):
        yield
