"""Group K-fold on train+val for a small validation split, and what decides that a split is small.

A validation split of a few dozen images cannot rank candidates: one image moves accuracy by several points. With
fewer than :data:`MIN_VAL_IMAGES` validation images (or, for classes, fewer than :data:`MIN_VAL_PER_CLASS` in some
class), each candidate is scored by K-fold cross-validation on the train and val images together: fold k is the
validation split of run k and the others train it, so every train+val image is validated once. Images of one group
(the manifest's ``group`` column: one plant, tray or date) stay in one fold. The test split is kept out: it stays
the test split of every fold run, and no fold run evaluates it.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from pathlib import Path

from plantpheno.files.csvfile import write_csv
from plantpheno.data.datasets import PreparedData

MIN_VAL_IMAGES = 200
MIN_VAL_PER_CLASS = 20


def validation_too_small(prepared: PreparedData) -> str | None:
    """Why the validation split is too small to choose on (a sentence), or None when it is large enough."""
    val = prepared.splits["val"]
    if len(val) < MIN_VAL_IMAGES:
        return f"the validation split has {len(val)} images (< {MIN_VAL_IMAGES})"
    if prepared.class_names is not None:
        counts = Counter(str(s.target) for s in val)
        fewest = min(prepared.class_names, key=lambda c: counts.get(c, 0))
        if counts.get(fewest, 0) < MIN_VAL_PER_CLASS:
            return (f"class {fewest!r} has {counts.get(fewest, 0)} validation images (< {MIN_VAL_PER_CLASS} a "
                    f"class)")
    return None


def assign_folds(prepared: PreparedData, folds: int, *, seed: int) -> dict[Path, int]:
    """Fold of each train+val image: whole groups (an image without a group is its own), shuffled with ``seed``,
    each placed in the fold with the fewest images so far (largest groups first)."""
    groups: dict[str, list[Path]] = defaultdict(list)
    for sample in [*prepared.splits["train"], *prepared.splits["val"]]:
        groups[sample.group if sample.group is not None else f"path:{sample.path}"].append(sample.path)
    names = sorted(groups)
    random.Random(seed).shuffle(names)
    names.sort(key=lambda g: -len(groups[g]))  # stable: equal sizes keep the shuffled order
    sizes = [0] * folds
    out: dict[Path, int] = {}
    for name in names:
        k = min(range(folds), key=lambda i: (sizes[i], i))
        sizes[k] += len(groups[name])
        out.update({p: k for p in groups[name]})
    return out


def write_fold_manifests(prepared: PreparedData, folds: int, *, seed: int, folder: Path) -> list[Path]:
    """One CSV manifest per fold (``path,label|value,split,group``; absolute paths): fold k is ``val``, the
    other train+val images ``train``, the test split ``test`` as it was."""
    fold_of = assign_folds(prepared, folds, seed=seed)
    target = "label" if prepared.class_names is not None else "value"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(folds):
        rows: list[tuple[str, object, str, str]] = []
        for split in ("train", "val", "test"):
            for s in prepared.splits[split]:
                new = "test" if split == "test" else ("val" if fold_of[s.path] == k else "train")
                rows.append((str(Path(s.path).resolve()), s.target, new, s.group or f"path:{s.path}"))
        path = folder / f"fold{k + 1}.csv"
        write_csv(path, [("path", target, "split", "group"), *rows])
        paths.append(path)
    return paths
