"""The pool of ``data suggest``: what is left out (with why) and the pools refused with one message."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from plantpheno.data.images import check_images
from plantpheno.errors import DataError
from plantpheno.labelling.pool import Labelled, read_pool


@pytest.fixture(scope="module")
def leaves(tmp_path_factory) -> tuple[list[Labelled], list, Path]:
    """12 labelled synthetic leaves (64 px) and a folder of 8 new ones drawn with another seed."""
    from plantpheno.data.synth import synthesize_disease

    base = tmp_path_factory.mktemp("pool")
    root = synthesize_disease(base / "labelled", per_class=3, image_size=64, seed=1)
    fresh = synthesize_disease(base / "fresh", per_class=2, image_size=64, seed=7)
    labelled = [Labelled(p, p.parent.name, "train", None) for p in sorted(root.rglob("*.jpg"))]
    return labelled, check_images([e.path for e in labelled]), fresh


def _read(source: Path, leaves):
    labelled, checks, _ = leaves
    return read_pool(source, labelled, checks, memo=None, near_distance=4, max_pixels=None)


def _pool(tmp_path: Path, leaves) -> Path:
    pool = tmp_path / "pool"
    shutil.copytree(leaves[2], pool)
    return pool


def test_a_clean_pool_is_used_whole(tmp_path, leaves):
    pool = _read(_pool(tmp_path, leaves), leaves)
    assert len(pool.checks) == 8 and pool.skipped == []


def test_unreadable_images_are_listed_and_skipped(tmp_path, leaves):
    source = _pool(tmp_path, leaves)
    (source / "healthy" / "broken.jpg").write_bytes(b"not a jpeg")
    pool = _read(source, leaves)
    assert len(pool.checks) == 8
    assert [(p.name, why.split(":")[0]) for p, why in pool.skipped] == [("broken.jpg", "unreadable")]


def test_images_in_the_splits_and_copies_of_labelled_images_are_left_out(tmp_path, leaves):
    labelled = leaves[0]
    source = _pool(tmp_path, leaves)
    shutil.copy(labelled[0].path, source / "in_splits_elsewhere.jpg")  # the same picture, another file
    twice = next(p for p in sorted(source.rglob("*.jpg")) if p.parent != source)
    shutil.copy(twice, source / "zz_twice.jpg")  # one new picture twice in the pool: suggested once
    img = Image.open(labelled[1].path)
    img.resize((58, 58)).save(source / "resaved.jpg", quality=80)  # a re-saved, slightly resized copy
    csv = tmp_path / "pool.csv"
    csv.write_text("path\n" + "\n".join([str(labelled[2].path), "pool/resaved.jpg", "pool/in_splits_elsewhere.jpg",
                                         *(str(p) for p in sorted(source.rglob("*.jpg")) if p.parent != source)])
                   + "\npool/zz_twice.jpg\n")
    pool = _read(csv, leaves)
    assert len(pool.checks) == 8  # the labelled file itself is not even considered
    why = {p.name: w for p, w in pool.skipped}
    assert why["in_splits_elsewhere.jpg"].startswith("same picture as labelled")
    assert why["resaved.jpg"].startswith("near duplicate of labelled")
    assert why["zz_twice.jpg"] == f"same picture as pool image {twice}"


def test_an_empty_pool_is_refused(tmp_path, leaves):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="is empty: it holds no images"):
        _read(tmp_path / "empty", leaves)
    csv = tmp_path / "known.csv"
    csv.write_text("path\n" + "\n".join(str(e.path) for e in leaves[0][:3]) + "\n")
    with pytest.raises(DataError, match="all 3 of its images are already in the run's splits"):
        _read(csv, leaves)


def test_a_pool_of_another_band_layout_is_refused(tmp_path, leaves):
    source = tmp_path / "grey"
    source.mkdir()
    for p in sorted(leaves[2].rglob("*.jpg")):
        Image.open(p).convert("L").save(source / f"{p.stem}.png")
    with pytest.raises(DataError, match="its images are grey but the run was trained on colour images"):
        _read(source, leaves)


def test_a_mixed_pool_skips_the_images_of_another_layout(tmp_path, leaves):
    source = _pool(tmp_path, leaves)
    Image.open(next(source.rglob("*.jpg"))).convert("L").save(source / "grey.png")
    pool = _read(source, leaves)
    assert [p.name for p, _ in pool.skipped] == ["grey.png"] and "grey image" in pool.skipped[0][1]


def test_a_pool_at_another_image_scale_is_refused(tmp_path, leaves):
    source = tmp_path / "large"
    source.mkdir()
    for p in sorted(leaves[2].rglob("*.jpg")):
        Image.open(p).resize((320, 320)).save(source / p.name)
    with pytest.raises(DataError, match=r"320 px on their shorter side \(median\), the run's 64 px: more than 2x"):
        _read(source, leaves)


def test_a_csv_pool_needs_a_path_column(tmp_path, leaves):
    csv = tmp_path / "pool.csv"
    csv.write_text("file\na.jpg\n")
    with pytest.raises(DataError, match="no 'path' column"):
        _read(csv, leaves)
    with pytest.raises(DataError, match="does not exist"):
        _read(tmp_path / "nowhere", leaves)
