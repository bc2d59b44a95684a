"""Tests for the procedural synthetic plant-image generators (plantpheno.data.synth)."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from plantpheno.data.synth import DISEASE_CLASSES, synthesize_disease, synthesize_rosettes
from plantpheno.errors import DataError


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _rows(labels: Path) -> list[dict[str, str]]:
    with labels.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _colour_masks(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """RGB float array plus masks of green, lesion-coloured (saturated brown/orange) and yellow pixels."""
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    high, low = rgb.max(axis=-1), rgb.min(axis=-1)
    saturation = (high - low) / np.maximum(high, 1.0)
    green = (g > r + 12) & (g > b + 12)
    lesion = (r > g + 12) & (saturation > 0.45) & (r > 60)  # soil/paper/dark backgrounds are less saturated
    yellow = (r > 110) & (g > 110) & (b < 0.6 * g) & (np.abs(r - g) < 45)
    return rgb, green, lesion, yellow


def test_disease_layout_and_images(tmp_path: Path) -> None:
    out = synthesize_disease(tmp_path / "ds", per_class=3, image_size=40, seed=1)
    assert out == tmp_path / "ds"
    assert sorted(p.name for p in out.iterdir()) == sorted(DISEASE_CLASSES)
    for name in DISEASE_CLASSES:
        files = sorted(p.name for p in (out / name).iterdir())
        assert files == [f"{name}_{i:04d}.jpg" for i in range(3)]
        for file in files:
            with Image.open(out / name / file) as img:
                assert img.format == "JPEG"
                assert img.mode == "RGB"
                assert img.size == (40, 40)


def test_rosettes_layout_and_labels(tmp_path: Path) -> None:
    labels = synthesize_rosettes(
        tmp_path / "ros", plants=5, views_per_plant=2, image_size=48, min_leaves=2, max_leaves=6, seed=3
    )
    assert labels == tmp_path / "ros" / "labels.csv"
    assert labels.read_text().splitlines()[0] == "path,value,group"
    rows = _rows(labels)
    assert len(rows) == 10
    assert len(list((labels.parent / "images").iterdir())) == 10
    by_group: dict[str, list[int]] = {}
    for row in rows:
        value = int(row["value"])
        assert 2 <= value <= 6
        assert row["path"].startswith("images/") and row["path"].startswith(f"images/{row['group']}_view")
        by_group.setdefault(row["group"], []).append(value)
        with Image.open(labels.parent / row["path"]) as img:
            assert img.mode == "RGB" and img.size == (48, 48)
    assert sorted(by_group) == [f"plant{p:03d}" for p in range(5)]
    for values in by_group.values():
        assert len(values) == 2 and len(set(values)) == 1


def test_rosettes_single_count(tmp_path: Path) -> None:
    labels = synthesize_rosettes(tmp_path / "r", plants=2, views_per_plant=1, image_size=32, min_leaves=7, max_leaves=7)
    assert {row["value"] for row in _rows(labels)} == {"7"}


def test_disease_is_deterministic_and_seeded(tmp_path: Path) -> None:
    first = _files(synthesize_disease(tmp_path / "a", per_class=2, image_size=32, seed=5))
    second = _files(synthesize_disease(tmp_path / "b", per_class=2, image_size=32, seed=5))
    other = _files(synthesize_disease(tmp_path / "c", per_class=2, image_size=32, seed=6))
    assert first == second
    assert first.keys() == other.keys()
    assert all(first[name] != other[name] for name in first)


def test_disease_images_do_not_depend_on_dataset_size(tmp_path: Path) -> None:
    small = _files(synthesize_disease(tmp_path / "a", per_class=1, image_size=32, seed=2))
    large = _files(synthesize_disease(tmp_path / "b", per_class=3, image_size=32, seed=2))
    assert all(large[name] == data for name, data in small.items())


def test_rosettes_are_deterministic_and_seeded(tmp_path: Path) -> None:
    options: dict[str, Any] = {"plants": 3, "views_per_plant": 2, "image_size": 32}
    first = _files(synthesize_rosettes(tmp_path / "a", seed=4, **options).parent)
    second = _files(synthesize_rosettes(tmp_path / "b", seed=4, **options).parent)
    other = _files(synthesize_rosettes(tmp_path / "c", seed=9, **options).parent)
    assert first == second
    images = [name for name in first if name.endswith(".jpg")]
    assert all(first[name] != other[name] for name in images)
    views = [first[f"images/plant000_view{v}.jpg"] for v in range(2)]
    assert views[0] != views[1]


def test_disease_classes_differ_in_colour(tmp_path: Path) -> None:
    """Would fail if every class were drawn the same: diseased leaves carry brown/orange/yellow lesions."""
    out = synthesize_disease(tmp_path / "ds", per_class=8, image_size=64, seed=0)
    lesion_share: dict[str, float] = {}
    greenness: dict[str, float] = {}
    for name in DISEASE_CLASSES:
        shares, greens = [], []
        for path in sorted((out / name).glob("*.jpg")):
            rgb, green, lesion, yellow = _colour_masks(path)
            plant = green | lesion | yellow
            shares.append((lesion | yellow).sum() / max(int(plant.sum()), 1))
            greens.append(float((rgb[..., 1] - rgb[..., 0])[plant].mean()))
        lesion_share[name], greenness[name] = float(np.mean(shares)), float(np.mean(greens))
    assert lesion_share["healthy"] < 0.05
    for name in DISEASE_CLASSES[1:]:
        assert lesion_share[name] > lesion_share["healthy"] + 0.15, lesion_share
        assert greenness[name] < greenness["healthy"] - 10, greenness


def test_rosette_green_area_grows_with_leaf_count(tmp_path: Path) -> None:
    labels = synthesize_rosettes(
        tmp_path / "r", plants=12, views_per_plant=1, image_size=48, min_leaves=2, max_leaves=12
    )
    counts, areas = [], []
    for row in _rows(labels):
        _, green, _, _ = _colour_masks(labels.parent / row["path"])
        counts.append(int(row["value"]))
        areas.append(float(green.mean()))
    assert np.corrcoef(counts, areas)[0, 1] > 0.4


_BAD_ARGS: list[tuple[Callable[..., Path], dict[str, Any], str]] = [
    (synthesize_disease, {"per_class": 0}, "per_class must be >= 1, got 0"),
    (synthesize_disease, {"image_size": 31}, "image_size must be >= 32, got 31"),
    (synthesize_disease, {"image_size": 1025}, "image_size must be <= 1024, got 1025"),
    (synthesize_disease, {"seed": -1}, "seed must be >= 0, got -1"),
    (synthesize_disease, {"per_class": 2.5}, "per_class must be an integer"),
    (synthesize_rosettes, {"plants": 0}, "plants must be >= 1, got 0"),
    (synthesize_rosettes, {"views_per_plant": 0}, "views_per_plant must be >= 1, got 0"),
    (synthesize_rosettes, {"image_size": 2000}, "image_size must be <= 1024, got 2000"),
    (synthesize_rosettes, {"min_leaves": 0}, "min_leaves must be >= 1, got 0"),
    (synthesize_rosettes, {"max_leaves": 31}, "max_leaves must be <= 30, got 31"),
    (synthesize_rosettes, {"min_leaves": 5, "max_leaves": 4}, "min_leaves must be <= max_leaves"),
    (synthesize_rosettes, {"seed": True}, "seed must be an integer, got True"),
]


@pytest.mark.parametrize(("generator", "kwargs", "message"), _BAD_ARGS)
def test_bad_arguments_raise_data_error(
    tmp_path: Path, generator: Callable[..., Path], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(DataError, match=message):
        generator(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("generator", [synthesize_disease, synthesize_rosettes])
def test_non_empty_out_dir_is_refused(tmp_path: Path, generator: Callable[..., Path]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not empty"):
        generator(out, image_size=32)
    with pytest.raises(DataError, match="does not write"):
        generator(out, image_size=32, overwrite=True)
    assert (out / "notes.txt").read_text() == "keep me"


def test_empty_out_dir_is_used(tmp_path: Path) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    assert synthesize_disease(out, per_class=1, image_size=32) == out


def test_out_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        synthesize_rosettes(target, plants=1, image_size=32)


def test_overwrite_replaces_previous_output(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    synthesize_disease(out, per_class=3, image_size=32)
    with pytest.raises(DataError, match="not empty"):
        synthesize_disease(out, per_class=1, image_size=32)
    synthesize_disease(out, per_class=1, image_size=32, overwrite=True)
    assert sorted(p.name for p in (out / "rust").iterdir()) == ["rust_0000.jpg"]

    labels = synthesize_rosettes(tmp_path / "r", plants=3, views_per_plant=2, image_size=32)
    labels = synthesize_rosettes(tmp_path / "r", plants=1, views_per_plant=1, image_size=32, overwrite=True)
    assert len(_rows(labels)) == 1
    assert len(list((labels.parent / "images").iterdir())) == 1


def test_planted_defects_leave_the_clean_images_alone_and_are_recorded(tmp_path: Path) -> None:
    from plantpheno.data.synth import Defects

    clean = synthesize_disease(tmp_path / "clean", per_class=10, image_size=40, seed=2)
    planted = synthesize_disease(tmp_path / "planted", per_class=10, image_size=40, seed=2,
                                 defects=Defects(duplicates=2, near_duplicates=1, conflicts=1, flips=2))
    defects = json.loads((planted / "defects.json").read_text())
    rows = _rows(planted / "labels.csv")
    assert len(rows) == 40 + 2 + 1 + 1 and {r["split"] for r in rows} == {"train", "val", "test"}
    by_path = {r["path"]: r for r in rows}
    for original, copy in defects["duplicates"]:
        assert (planted / original).read_bytes() == (planted / copy).read_bytes()
        assert by_path[original]["split"] == "train" and by_path[copy]["split"] == "test"
    for original, copy in defects["conflicts"]:
        assert (planted / original).read_bytes() == (planted / copy).read_bytes()
        assert by_path[original]["label"] != by_path[copy]["label"]
    flipped = {f["path"] for f in defects["flips"]}
    for flip in defects["flips"]:
        assert by_path[flip["path"]]["label"] == flip["labelled"] != flip["drawn_as"]
        assert flip["path"].startswith(flip["labelled"] + "/")
    unchanged = [p for p in _files(clean) if p in _files(planted)]
    assert len(unchanged) == 40 - len(flipped)  # flipped ones moved folders, same pixels
    assert all((clean / p).read_bytes() == (planted / p).read_bytes() for p in unchanged)
    # a folder with planted defects is the generator's own: overwrite may replace it
    synthesize_disease(tmp_path / "planted", per_class=4, image_size=40, seed=2, overwrite=True)
    assert not (planted / "labels.csv").exists()


def test_background_shortcut_gives_each_class_its_own_background(tmp_path: Path) -> None:
    from plantpheno.data.synth import Defects

    def class_corner_spread(root: Path) -> float:
        """Spread across classes of each class's mean corner colour."""
        means = [np.mean([np.asarray(Image.open(p).convert("RGB"), np.float32)[:3, :3].mean(axis=(0, 1))
                          for p in sorted((root / name).glob("*.jpg"))], axis=0) for name in DISEASE_CLASSES]
        return float(np.std(means, axis=0).mean())

    clean = synthesize_disease(tmp_path / "clean", per_class=10, image_size=48, seed=4)
    shortcut = synthesize_disease(tmp_path / "shortcut", per_class=10, image_size=48, seed=4,
                                  defects=Defects(background_shortcut=True))
    assert class_corner_spread(shortcut) > 2 * class_corner_spread(clean)
    with pytest.raises(DataError, match="planted defects need as many training images"):
        synthesize_disease(tmp_path / "few", per_class=3, image_size=40, defects=Defects(flips=50))


def test_field_style_keeps_leaf_and_label_but_changes_the_scene(tmp_path: Path) -> None:
    from plantpheno.data.synth import disease_example

    lab = synthesize_disease(tmp_path / "lab", per_class=2, image_size=64, seed=3)
    field = synthesize_disease(tmp_path / "field", per_class=2, image_size=64, seed=3, style="field")
    assert sorted(_files(lab)) == sorted(_files(field))  # same classes, same files, same labels
    inside, outside = [], []
    for name in DISEASE_CLASSES:
        for i in range(2):
            _, _, leaf = disease_example(name, i, image_size=64, seed=3)
            a, b = (np.asarray(Image.open(root / name / f"{name}_{i:04d}.jpg"), np.float32) for root in (lab, field))
            for mask, found in ((leaf > 0.9, inside), (leaf < 0.05, outside)):
                found.append(np.corrcoef(a[mask].ravel(), b[mask].ravel())[0, 1])
    # the leaf is the same leaf (only relit); the background is another scene
    assert min(inside) > 0.8 and np.mean(outside) < 0.4
    again = synthesize_disease(tmp_path / "again", per_class=2, image_size=64, seed=3, style="field")
    assert _files(again) == _files(field)  # deterministic by seed


def test_field_style_backgrounds_are_greener_than_lab_ones(tmp_path: Path) -> None:
    lab = synthesize_disease(tmp_path / "lab", per_class=4, image_size=64, seed=0)
    field = synthesize_disease(tmp_path / "field", per_class=4, image_size=64, seed=0, style="field")

    def border_green(root: Path) -> float:  # the image's outer frame: background almost everywhere
        shares = []
        for path in sorted(root.rglob("*.jpg")):
            _, green, _, _ = _colour_masks(path)
            frame = np.ones_like(green)
            frame[6:-6, 6:-6] = False
            shares.append(green[frame].mean())
        return float(np.mean(shares))

    assert border_green(field) > border_green(lab) + 0.05


def test_unknown_style_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="style must be one of plain, field, got 'forest'"):
        synthesize_disease(tmp_path / "x", per_class=1, style="forest")
