"""Label names and counts: spellings of one class, classes missing from a split, and rare classes."""

from __future__ import annotations

import unicodedata
from collections import Counter, defaultdict
from collections.abc import Sequence

from plantpheno.data.doctor.catalog import Entry
from plantpheno.data.doctor.findings import Finding

IMBALANCE_SHARE = 0.1  # a class with fewer than 0.1 / K of the images is flagged (K classes)


def normal_form(label: str) -> str:
    """What two spellings of one label share: Unicode NFKC form, case-folded, surrounding space removed."""
    return unicodedata.normalize("NFKC", label).casefold().strip()


def _shown(label: str) -> str:
    """The label quoted, saying so when its accents are stored decomposed (it looks like the composed one)."""
    nfc = unicodedata.normalize("NFC", label)
    return repr(label) + (" (accents stored decomposed, Unicode NFD)" if nfc != label else "")


def case_variants(entries: Sequence[Entry]) -> list[Finding]:
    counts = Counter(str(e.target) for e in entries)
    spellings: dict[str, list[str]] = defaultdict(list)
    for label in sorted(counts):
        spellings[normal_form(label)].append(label)
    clashes = [names for names in spellings.values() if len(names) > 1]
    if not clashes:
        return []
    merges, files, notes = [], [], []
    for names in clashes:
        keep = max(names, key=lambda n: (counts[n], n == n.strip(), n == unicodedata.normalize("NFC", n), n))
        others = [n for n in names if n != keep]
        merges.append(" + ".join(f"{_shown(n)} ({counts[n]})" for n in others) + f" -> {_shown(keep)} ({counts[keep]})")
        rows = [e for e in entries if str(e.target) in others]
        files.append(tuple(str(e.path) for e in rows))
        notes.append(tuple(f"{e.split}, {e.target!r} -> {keep!r}" for e in rows))
    return [Finding(
        "error", "labels.case_variants",
        f"{len(clashes)} class(es) are spelled several ways (case, surrounding space or Unicode form) and became "
        f"separate classes: {'; '.join(merges)}.",
        len(clashes), "merge each into one spelling (rename the class folders or fix the label column): "
        + "; ".join(merges) + ".",
        files=tuple(files), file_notes=tuple(notes), details={"merges": merges})]


def missing_from_splits(entries: Sequence[Entry]) -> list[Finding]:
    """Classes with no image in a split that has images (a class with one image never reaches val or test)."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for e in entries:
        counts[str(e.target)][e.split] += 1
    splits = sorted({e.split for e in entries}, key=("train", "val", "test").index)
    missing = {label: [s for s in splits if not c[s]] for label, c in sorted(counts.items())}
    missing = {label: where for label, where in missing.items() if where}
    if not missing:
        return []
    names = "; ".join(f"{label!r} ({sum(counts[label].values())} image(s); none in {', '.join(where)})"
                      for label, where in missing.items())
    rows = [[e for e in entries if str(e.target) == label] for label in missing]
    return [Finding(
        "warning", "labels.missing_from_split",
        f"{len(missing)} class(es) have no image in some split: {names}. A class missing from train is never "
        f"learned; one missing from val or test is never measured.",
        len(missing), "add images of these classes, merge or drop them, or (with a split column) put at least one "
        "image of each class in every split.",
        files=tuple(tuple(str(e.path) for e in g) for g in rows),
        file_notes=tuple(tuple(e.note() for e in g) for g in rows),
        details={"missing": missing})]


def imbalance(entries: Sequence[Entry]) -> list[Finding]:
    counts = Counter(str(e.target) for e in entries)
    total, k = sum(counts.values()), len(counts)
    if k < 2:
        return []
    floor = IMBALANCE_SHARE / k * total
    rare = {label: n for label, n in sorted(counts.items(), key=lambda kv: kv[1]) if n < floor}
    if not rare:
        return []
    largest = max(counts.values())
    listing = ", ".join(f"{label!r} {n} ({n / total:.1%})" for label, n in rare.items())
    return [Finding(
        "warning", "labels.imbalance",
        f"{len(rare)} class(es) have fewer than {IMBALANCE_SHARE:g}/K of the {total} images (K = {k}, so under "
        f"{floor:.0f}): {listing}; the largest class has {largest}. Accuracy then mostly reflects the large classes.",
        len(rare), "set training.class_weights=balanced or data.class_balanced_sampling=true, judge the model by "
        "macro-F1 (the default monitor) and per-class recall, and collect more images of the rare classes.",
        details={"counts": dict(counts), "threshold": floor})]
