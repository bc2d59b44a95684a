"""One file listed twice, one picture with two labels, and duplicate pictures: exact (same decoded pixels, in
any file format) and near (a re-saved, resized or re-exposed copy).

A near duplicate must be sure before it is reported: a pair whose perceptual hashes are within a few bits is
only a candidate (two different leaves, each alone on a dark background, can be 4 bits apart), confirmed when
their aligned 16 x 16 colour thumbnails correlate at least ``CONFIRM_SIMILARITY``. Unconfirmed candidates are a
note. A duplicate that crosses splits, or explicit groups, is leakage (an error): the test score is then
measured partly on training images. Within one split it is a warning (the image weighs double).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from plantpheno.data.doctor.catalog import Entry, same_target
from plantpheno.data.doctor.findings import Finding
from plantpheno.data.doctor.pixels import colour_thumb, thumb_similarity

# Measured (thumbnail correlation, pixels.thumb_similarity): copies of 240 PlantVillage and 60 synthetic images
# re-saved at x0.8 JPEG q75, at x0.5 q60, brightened x1.3, darkened x0.7, contrast x0.8 or saturated x1.3 (the
# 589 of 600 within the hash distance) score 0.968 and more; different pictures do not reach it: the 371 pairs
# within 10 bits among the PlantVillage subset and 10 synthetic seeds score at most 0.937 (one repeated shot
# of one leaf, 0.951), the 4 synthetic pairs within 4 bits 0.757 to 0.915. docs/guide/data-checks.md.
CONFIRM_SIMILARITY = 0.95


def duplicate_paths(entries: Sequence[Entry]) -> list[Finding]:
    rows: dict[str, list[Entry]] = defaultdict(list)
    for e in entries:
        rows[e.key].append(e)
    repeated = [group for group in rows.values() if len(group) > 1]
    if not repeated:
        return []
    return [Finding(
        "error", "duplicate_paths",
        f"{len(repeated)} file(s) are listed more than once ({sum(len(g) for g in repeated)} rows): each copy is "
        f"trained or tested on as if it were another image.",
        len(repeated), "keep one row per file in the manifest.",
        files=tuple(tuple(str(e.path) for e in g) for g in repeated),
        file_notes=tuple(tuple(e.note() for e in g) for g in repeated))]


def conflicting_labels(entries: Sequence[Entry], *, regression: bool) -> tuple[list[Finding], set[str]]:
    """The same picture (same file or identical pixels) with different labels; also returns the conflicting
    pictures (their content ids), which the duplicate findings leave to this one."""
    by_content: dict[str, list[Entry]] = defaultdict(list)
    for e in entries:
        by_content[e.content].append(e)
    conflicts = {content: group for content, group in by_content.items()
                 if any(not same_target(group[0].target, e.target) for e in group[1:])}
    if not conflicts:
        return [], set()
    what = "values" if regression else "labels"
    groups = list(conflicts.values())
    finding = Finding(
        "error", "conflicting_labels",
        f"{len(groups)} image(s) carry different {what} (the same file listed twice, or one picture saved in "
        f"several files, e.g. copied into two class folders): the model is taught and scored both ways.",
        len(groups), f"decide each image's true {what[:-1]} and delete the other copies or rows.",
        files=tuple(tuple(str(e.path) for e in g) for g in groups),
        file_notes=tuple(tuple(e.note() for e in g) for g in groups))
    return [finding], set(conflicts)


@dataclass(frozen=True)
class DuplicateIndex:
    """Pictures grouped by identical pixels, clusters of confirmed near duplicates, and the candidate pairs
    (close perceptual hashes) that the colour thumbnails did not confirm."""

    by_content: dict[str, list[Entry]]  # pixel hash -> every row showing that picture
    clusters: list[list[str]]  # confirmed near-duplicate clusters of pixel hashes (two or more pictures each)
    distance: int
    unconfirmed: list[tuple[str, str, float]] = field(default_factory=list)  # (content, content, similarity)

    def cluster_ids(self, entries: Sequence[Entry]) -> list[str]:
        """A fold key per entry: rows of one picture, or of near-identical pictures, get the same key (so
        out-of-sample checks never score an image with a copy of it in the training folds)."""
        cluster = {content: f"near{i}" for i, members in enumerate(self.clusters) for content in members}
        return [cluster.get(e.content, e.content) for e in entries]


def index_duplicates(entries: Sequence[Entry], *, max_distance: int) -> DuplicateIndex:
    by_content: dict[str, list[Entry]] = defaultdict(list)
    for e in entries:
        by_content[e.content].append(e)
    hashed = [(content, rows[0].stats.phash) for content, rows in by_content.items() if rows[0].stats is not None]
    contents = [c for c, _ in hashed]
    values = np.array([int(h, 16) for _, h in hashed], dtype=np.uint64)
    parent = list(range(len(contents)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    thumbs = [colour_thumb(rows[0].stats) for rows in (by_content[c] for c in contents)]
    unconfirmed = []
    for i, j in close_pairs(values, max_distance):
        similarity = _similarity(thumbs[i], thumbs[j])
        if similarity >= CONFIRM_SIMILARITY:
            parent[root(i)] = root(j)
        else:
            unconfirmed.append((contents[i], contents[j], similarity))
    members: dict[int, list[str]] = defaultdict(list)
    for i, content in enumerate(contents):
        members[root(i)].append(content)
    return DuplicateIndex(dict(by_content), [m for m in members.values() if len(m) > 1], max_distance, unconfirmed)


def _similarity(a: np.ndarray | None, b: np.ndarray | None) -> float:
    """The thumbnails' similarity; NaN (never confirmed: an error must be sure) when one has none recorded."""
    return float("nan") if a is None or b is None else thumb_similarity(a, b)


def close_pairs(hashes: np.ndarray, max_distance: int) -> list[tuple[int, int]]:
    """Index pairs of 64-bit hashes at Hamming distance <= ``max_distance``.

    Pigeonhole: split the 64 bits into ``max_distance + 1`` blocks; two hashes that differ in at most
    ``max_distance`` bits agree exactly on at least one block. So only hashes that share a block value are
    compared, not all N^2 / 2 pairs."""
    n = len(hashes)
    if n < 2:
        return []
    blocks = max_distance + 1
    width = -(-64 // blocks)
    found: set[tuple[int, int]] = set()
    for b in range(blocks):
        shift = np.uint64(b * width)
        bits = min(width, 64 - b * width)
        if bits <= 0:
            break
        key = (hashes >> shift) & np.uint64((1 << bits) - 1)
        order = np.argsort(key, kind="stable")
        sorted_keys = key[order]
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        ends = np.r_[starts[1:], n]
        for start, end in zip(starts, ends):
            if end - start < 2:
                continue
            members = order[start:end]
            distances = _popcount(hashes[members][:, None] ^ hashes[members][None, :])
            for a, c in zip(*np.nonzero(np.triu(distances <= max_distance, 1))):
                i, j = int(members[a]), int(members[c])
                found.add((min(i, j), max(i, j)))
    return sorted(found)


def _popcount(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # NumPy >= 2.0
        return np.bitwise_count(x)
    as_bytes = x.view(np.uint8).reshape(*x.shape, 8)
    return _BYTE_BITS[as_bytes].sum(axis=-1)


_BYTE_BITS = np.array([i.bit_count() for i in range(256)], dtype=np.uint8)


def duplicate_findings(index: DuplicateIndex, *, conflicting: set[str]) -> list[Finding]:
    """Exact and near duplicates across splits or groups (errors) and within one split (warnings); pictures
    whose labels conflict are left to the conflicting-labels finding."""
    exact = [rows for content, rows in index.by_content.items()
             if content not in conflicting and len({e.key for e in rows}) > 1]
    near = [[e for content in cluster for e in index.by_content[content]] for cluster in index.clusters
            if not conflicting.intersection(cluster)]
    findings = []
    for kind, groups in (("exact_duplicates", exact), ("near_duplicates", near)):
        leaks = [g for g in groups if _crosses(g)]
        inside = [g for g in groups if not _crosses(g)]
        described = ("identical decoded pixels" if kind == "exact_duplicates" else
                     f"near-identical images (perceptual hashes at most {index.distance} of 64 bits apart and "
                     f"colour thumbnails correlating >= {CONFIRM_SIMILARITY:g}: re-saved, resized or re-exposed "
                     f"copies)")
        if leaks:
            findings.append(_finding(
                "error", f"{kind}.leak", leaks,
                f"{len(leaks)} group(s) of {described} sit in different splits or groups: the score on the "
                f"held-out split is partly measured on training images.",
                "keep one copy of each picture (delete the others or drop their rows), or give all copies one "
                "group so they stay in one split."))
        if inside:
            findings.append(_finding(
                "warning", f"{kind}.within_split", inside,
                f"{len(inside)} group(s) of {described} within one split: each picture counts more than once.",
                "delete the extra copies, or give each set of copies one group."))
    findings += _unconfirmed(index, conflicting)
    return findings


def _unconfirmed(index: DuplicateIndex, conflicting: set[str]) -> list[Finding]:
    """One note for the hash candidates the colour thumbnails did not confirm (most alike first)."""
    pairs = sorted((p for p in index.unconfirmed if not conflicting.intersection(p[:2])),
                   key=lambda p: -p[2] if p[2] == p[2] else 2.0)  # NaN (no thumbnail) last
    if not pairs:
        return []
    first = [(index.by_content[a][0], index.by_content[b][0], s) for a, b, s in pairs]
    return [Finding(
        "info", "near_duplicates.unconfirmed",
        f"{len(pairs)} pair(s) of images have perceptual hashes at most {index.distance} of 64 bits apart but "
        f"different colours or layout (colour thumbnails correlate < {CONFIRM_SIMILARITY:g}): most likely "
        f"different pictures of a similar scene (one leaf on a plain background), not copies.", len(pairs),
        "nothing, unless a pair is in fact one picture; then keep one copy.",
        files=tuple((str(a.path), str(b.path)) for a, b, _ in first),
        file_notes=tuple((f"{a.note()}, thumbnail correlation {s:.2f}", b.note()) for a, b, s in first),
        details={"threshold": CONFIRM_SIMILARITY, "distance": index.distance})]


def _crosses(rows: list[Entry]) -> bool:
    return len({e.split for e in rows}) > 1 or len({e.group for e in rows if e.group is not None}) > 1


def _finding(severity: str, check: str, groups: list[list[Entry]], message: str, fix: str) -> Finding:
    unique = [list({e.key: e for e in g}.values()) for g in groups]  # a file listed twice shows once here
    return Finding(severity, check, message, len(groups), fix,  # type: ignore[arg-type]
                   files=tuple(tuple(str(e.path) for e in g) for g in unique),
                   file_notes=tuple(tuple(e.note() for e in g) for g in unique))
