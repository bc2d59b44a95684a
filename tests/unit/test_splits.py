"""Tests for plantpheno.data.splits, splitting and fingerprinting in prepare_data, and EpochSampler."""

from __future__ import annotations

import csv
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from plantpheno.data.datasets import EpochSampler

from plantpheno.data.prepared import prepare_data
from plantpheno.data.splits import assign_splits
from plantpheno.errors import DataError

SPLIT_NAMES = ("train", "val", "test")


def _classification_data(seed: int = 0, sizes: tuple[int, ...] = (20, 25, 40, 60, 80, 120, 200, 455)):
    """~1000 samples of classes with the given sizes, in random single-class groups of 1-5 samples."""
    rng = np.random.default_rng(seed)
    targets, groups = [], []
    for c, size in enumerate(sizes):
        left, g = size, 0
        while left:
            n = min(left, int(rng.integers(1, 6)))
            targets += [f"class{c}"] * n
            groups += [f"c{c}g{g}"] * n
            left, g = left - n, g + 1
    order = rng.permutation(len(targets))  # interleave, so input order carries no class information
    return [targets[i] for i in order], [groups[i] for i in order]


def _split(targets, groups, *, seed=0, task="classification", val=0.15, test=0.15):
    return assign_splits(targets, groups, task=task, val_fraction=val, test_fraction=test, seed=seed)


# ----------------------------------------------------------------------------- assign_splits


def test_splits_are_deterministic_by_seed_and_differ_across_seeds():
    targets, groups = _classification_data()
    first = _split(targets, groups, seed=3)
    assert _split(targets, groups, seed=3) == first
    assert set(first) == set(SPLIT_NAMES) and len(first) == len(targets)
    others = [_split(targets, groups, seed=s) for s in (4, 5)]
    assert all(other != first for other in others)
    assert others[0] != others[1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_group_lies_in_exactly_one_split(seed):
    rng = np.random.default_rng(seed)
    targets, groups = [], []
    for g in range(300):  # groups of 1-5 samples; some groups mix labels, some samples have no group
        n = int(rng.integers(1, 6))
        targets += [f"class{rng.integers(0, 4)}" for _ in range(n)]
        groups += [f"plant{g}"] * n
    groups = [None if i % 13 == 0 else g for i, g in enumerate(groups)]
    result = _split(targets, groups, seed=seed)
    splits_of_group = defaultdict(set)
    for group, split in zip(groups, result):
        if group is not None:
            splits_of_group[group].add(split)
    assert all(len(s) == 1 for s in splits_of_group.values())
    assert {next(iter(s)) for s in splits_of_group.values()} == set(SPLIT_NAMES)


@pytest.mark.parametrize(("val", "test"), [(0.15, 0.15), (0.1, 0.2)])
def test_classification_split_is_stratified_with_requested_fractions(val, test):
    targets, groups = _classification_data(seed=7)
    result = _split(targets, groups, seed=11, val=val, test=test)
    counts = Counter(result)
    n = len(targets)
    assert abs(counts["val"] / n - val) < 0.02
    assert abs(counts["test"] / n - test) < 0.02
    per_class = Counter(zip(targets, result))
    class_sizes = Counter(targets)
    for label, size in class_sizes.items():
        for name, fraction in (("val", val), ("test", test)):
            assert per_class[label, name] >= 1, (label, name)
            if size >= 100:  # big classes get their own share, not just the overall one
                assert abs(per_class[label, name] / size - fraction) < 0.03, (label, name)
        assert per_class[label, "train"] >= size * 0.5


def test_many_small_classes_still_give_the_requested_fractions():
    """Rounding per class must not starve val/test: 100 classes of 3 images is 300 images, not too few."""
    for per_class, n_classes in ((3, 100), (6, 100), (10, 100)):
        targets = [f"species{i // per_class:03d}" for i in range(per_class * n_classes)]
        result = _split(targets, [None] * len(targets), seed=0)
        counts = Counter(result)
        for name in ("val", "test"):
            assert abs(counts[name] / len(targets) - 0.15) < 0.03, (per_class, counts)
    # classes of a single image can only be trained on: the other classes make up the val/test share
    targets = [f"rare{i:02d}" for i in range(50)] + [f"common{i // 5:02d}" for i in range(250)]
    counts = Counter(_split(targets, [None] * len(targets), seed=0))
    assert counts["val"] == counts["test"] == 45


def test_regression_split_is_stratified_by_value():
    rng = np.random.default_rng(0)
    values = list(rng.uniform(0, 100, 1000))
    quintile = np.searchsorted(np.quantile(values, [0.2, 0.4, 0.6, 0.8]), values)
    for seed in range(4):
        result = _split(values, [None] * len(values), task="regression", seed=seed)
        test_values = [v for v, s in zip(values, result) if s == "test"]
        assert abs(len(test_values) / len(values) - 0.15) < 0.02
        assert abs(np.mean(test_values) - np.mean(values)) < 2.0  # random picks: sd ~2.4
        for q in range(5):  # each fifth of the value range holds its 15 % share (random picks: 30 +- 5)
            in_q = [s for s, b in zip(result, quintile) if b == q]
            assert abs(in_q.count("test") - 30) <= 3, (seed, q)
            assert abs(in_q.count("val") - 30) <= 3, (seed, q)


def test_regression_groups_stay_together():
    rng = np.random.default_rng(1)
    values, groups = [], []
    for plant in range(120):
        leaves = int(rng.integers(3, 13))
        views = int(rng.integers(1, 6))
        values += [float(leaves)] * views
        groups += [f"plant{plant}"] * views
    result = _split(values, groups, task="regression", seed=5)
    by_group = defaultdict(set)
    for g, s in zip(groups, result):
        by_group[g].add(s)
    assert all(len(s) == 1 for s in by_group.values())
    assert set(result) == set(SPLIT_NAMES)


@pytest.mark.parametrize(("n", "val", "test", "name", "fraction"), [
    (3, 0.15, 0.15, "val", 0.15),
    (6, 0.05, 0.3, "val", 0.05),
    (6, 0.3, 0.05, "test", 0.05),
])
def test_too_small_dataset_names_the_split_and_fraction(n, val, test, name, fraction):
    targets = (["a", "b"] * n)[:n]
    with pytest.raises(DataError) as info:
        _split(targets, [None] * n, val=val, test=test)
    message = str(info.value)
    assert f"{name} split" in message
    assert f"data.{name}_fraction={fraction}" in message


def test_one_group_cannot_be_split():
    with pytest.raises(DataError, match="val split"):
        _split(["a"] * 10 + ["b"] * 10, ["field1"] * 20)


def test_zero_fraction_gives_an_empty_split():
    targets, groups = _classification_data(sizes=(40, 40))
    counts = Counter(_split(targets, groups, val=0.2, test=0.0))
    assert counts["test"] == 0 and counts["val"] > 0


# ----------------------------------------------------------------------------- splits through prepare_data


def _split_of(prepared) -> dict[Path, str]:
    return {s.path: name for name, samples in prepared.splits.items() for s in samples}


def test_prepare_data_folder_split_is_seeded_and_stratified(make_config, disease_root):
    first = prepare_data(make_config(data={"root": str(disease_root)}, seed=1))
    assert _split_of(prepare_data(make_config(data={"root": str(disease_root)}, seed=1))) == _split_of(first)
    assert _split_of(prepare_data(make_config(data={"root": str(disease_root)}, seed=2))) != _split_of(first)
    assert len(_split_of(first)) == 64
    for name in SPLIT_NAMES:
        assert {str(s.target) for s in first.splits[name]} == set(first.class_names)


def _manifest_with_splits(tmp_path: Path, rosette_manifest: Path, split_of) -> tuple[Path, dict[Path, str]]:
    with rosette_manifest.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    expected = {}
    lines = ["path,value,group,split"]
    for i, row in enumerate(rows):
        path = (rosette_manifest.parent / row["path"]).resolve()
        split = split_of(i)
        if split is None:
            continue
        expected[path] = split
        lines.append(f"{path},{row['value']},{row['group']},{split}")
    manifest = tmp_path / "with_split.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest, expected


def test_prepare_data_honours_a_split_column_exactly(make_config, rosette_manifest, tmp_path):
    # deliberately unstratified and group-breaking: the user's split is taken as given
    manifest, expected = _manifest_with_splits(tmp_path, rosette_manifest, lambda i: SPLIT_NAMES[i % 3])
    prepared = prepare_data(make_config(task="regression", data={"manifest": str(manifest)}))
    assert {p.resolve(): s for p, s in _split_of(prepared).items()} == expected


def test_prepare_data_split_column_without_val_rows_names_it(make_config, rosette_manifest, tmp_path):
    manifest, _ = _manifest_with_splits(tmp_path, rosette_manifest, lambda i: "test" if i % 4 == 0 else "train")
    with pytest.raises(DataError, match=r"no val rows"):
        prepare_data(make_config(task="regression", data={"manifest": str(manifest)}))


def test_prepare_data_keeps_plants_together(make_config, rosette_manifest):
    prepared = prepare_data(make_config(task="regression", data={"manifest": str(rosette_manifest)}))
    split_of_group = defaultdict(set)
    for name, samples in prepared.splits.items():
        for s in samples:
            split_of_group[s.group].add(name)
    assert len(split_of_group) == 20
    assert all(len(v) == 1 for v in split_of_group.values())


def test_prepare_data_too_small_folder_is_a_data_error(make_config, disease_root, tmp_path):
    root = tmp_path / "tiny"
    for class_dir in sorted(p for p in disease_root.iterdir() if p.is_dir())[:2]:
        (root / class_dir.name).mkdir(parents=True)
        for image in sorted(class_dir.iterdir())[:2]:
            shutil.copy(image, root / class_dir.name / image.name)
    with pytest.raises(DataError, match=r"too few images to make a (val|test) split: 4 images"):
        prepare_data(make_config(data={"root": str(root)}))


# ----------------------------------------------------------------------------- fingerprint


def test_fingerprint_follows_content_names_and_labels(make_config, disease_root, tmp_path):
    def fingerprint(**data) -> str:
        return prepare_data(make_config(data=data)).fingerprint

    copy = tmp_path / "copy" / "somewhere" / "leaves"
    shutil.copytree(disease_root, copy)
    original = fingerprint(root=str(disease_root))
    assert len(original) == 64
    assert fingerprint(root=str(copy)) == original

    image = sorted(copy.rglob("*.jpg"))[5]
    data = image.read_bytes()
    image.write_bytes(data + b"\0")  # still a valid JPEG, other bytes
    changed = fingerprint(root=str(copy))
    assert changed != original
    image.write_bytes(data)
    assert fingerprint(root=str(copy)) == original

    image.rename(image.with_name("renamed.jpg"))
    assert fingerprint(root=str(copy)) != original
    image.with_name("renamed.jpg").rename(image)

    rows = [(p.relative_to(copy).as_posix(), p.parent.name) for p in sorted(copy.rglob("*.jpg"))]
    manifest = tmp_path / "labels.csv"
    manifest.write_text("path,label\n" + "".join(f"{p},{label}\n" for p, label in rows))
    assert fingerprint(root=str(copy), manifest=str(manifest)) == original
    other_label = next(label for _, label in rows if label != rows[0][1])
    rows[0] = (rows[0][0], other_label)
    manifest.write_text("path,label\n" + "".join(f"{p},{label}\n" for p, label in rows))
    assert fingerprint(root=str(copy), manifest=str(manifest)) != original


# ----------------------------------------------------------------------------- EpochSampler


def test_epoch_sampler_is_reproducible_per_seed_and_epoch():
    def items(seed: int, epoch: int, shuffle: bool = True) -> list[tuple[int, int]]:
        sampler = EpochSampler(50, seed=seed, shuffle=shuffle)
        sampler.set_epoch(epoch)
        return list(sampler)

    first = items(0, 3)
    assert items(0, 3) == first
    assert sorted(i for i, _ in first) == list(range(50))  # a permutation without replacement
    assert len({s for _, s in first}) == 50
    assert [i for i, _ in first] != list(range(50))
    assert items(0, 4) != first and [i for i, _ in items(0, 4)] != [i for i, _ in first]
    assert {s for _, s in items(0, 4)}.isdisjoint({s for _, s in first})
    assert items(1, 3) != first
    assert [i for i, _ in items(0, 3, shuffle=False)] == list(range(50))
    assert [s for _, s in items(0, 3, shuffle=False)] != [s for _, s in items(0, 4, shuffle=False)]


@pytest.mark.parametrize("weighted", [False, True])
def test_epoch_sampler_resumes_with_the_tail_of_the_epoch(weighted):
    weights = torch.linspace(1, 5, 40, dtype=torch.double) if weighted else None
    sampler = EpochSampler(40, seed=7, shuffle=True, weights=weights)
    sampler.set_epoch(2)
    full = list(sampler)
    assert len(sampler) == 40
    for start in (0, 1, 17, 39, 40):
        sampler.set_epoch(2, start=start)
        assert len(sampler) == 40 - start
        assert list(sampler) == full[start:]
    sampler.set_epoch(3)  # a new epoch starts from the beginning again
    assert len(sampler) == 40 and len(list(sampler)) == 40


def test_weighted_sampler_draws_with_replacement_and_favours_rare_classes():
    labels = [0] * 180 + [1] * 18 + [2] * 2
    counts = Counter(labels)
    weights = torch.tensor([1.0 / counts[y] for y in labels], dtype=torch.double)
    drawn = []
    for epoch in range(5):
        sampler = EpochSampler(len(labels), seed=0, shuffle=True, weights=weights)
        sampler.set_epoch(epoch)
        order = [i for i, _ in sampler]
        assert len(order) == len(labels)
        assert len(set(order)) < len(order)  # with replacement: repeats
        drawn += order
    share = Counter(labels[i] for i in drawn)
    assert share[2] / len(drawn) > 0.2  # raw share 1 %, balanced 33 %
    assert share[1] / len(drawn) > 0.2  # raw share 9 %
    assert share[0] / len(drawn) < 0.45  # raw share 90 %
