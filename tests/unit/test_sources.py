"""Tests for plantpheno.data.sources: image-folder and CSV-manifest datasets."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from plantpheno.config import DataConfig
from plantpheno.data.sources import Sample, class_names_of, read_folder, read_manifest
from plantpheno.errors import DataError

EXTS = DataConfig.model_fields["extensions"].default


def _image(path: Path, colour: tuple[int, int, int] = (40, 150, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".png": "PNG", ".bmp": "BMP"}.get(path.suffix.lower(), "JPEG")
    Image.new("RGB", (6, 4), colour).save(path, format=fmt)
    return path


def _rel(samples: list[Sample], root: Path) -> list[tuple[str, str]]:
    return [(s.path.relative_to(root).as_posix(), str(s.target)) for s in samples]


# ----------------------------------------------------------------------------- folder


def test_read_folder_classes_nested_files_hidden_entries_and_extensions(tmp_path):
    root = tmp_path / "leaves"
    wanted = [
        "healthy/a.jpg",
        "healthy/B.JPG",
        "healthy/plot1/day2/c.Jpeg",  # nested sub-folders of a class folder belong to the class
        "healthy/x.jpg/inside.png",  # a folder named like an image is a sub-folder, not a file
        "rust/d.PNG",
        "rust/e.bmp",
        "rust/f.TIF",
    ]
    ignored = [
        ".ipynb_checkpoints/g-checkpoint.jpg",  # hidden folders are never classes
        ".git/objects/h.png",
        "healthy/.DS_Store",  # hidden files are never images
        "healthy/._a.jpg",
        "healthy/.ipynb_checkpoints/a-checkpoint.jpg",  # hidden sub-folder inside a class
        "rust/.hidden/i.jpg",
        "top_level.jpg",  # files directly in root are not in a class
        "rust/notes.txt",
        "rust/leaf.jpg.bak",
        "rust/raw.cr2",
    ]
    for rel in wanted + ignored:
        _image(root / rel)
    (root / "empty_class").mkdir()
    samples = read_folder(root, extensions=EXTS)
    assert sorted(_rel(samples, root)) == sorted((rel, rel.split("/")[0]) for rel in wanted)
    assert class_names_of(samples) == ["healthy", "rust"]
    assert all(s.split is None and s.group is None for s in samples)
    assert _rel(read_folder(root, extensions=EXTS), root) == _rel(samples, root)  # stable order


def test_read_folder_extensions_match_case_insensitively_both_ways(tmp_path):
    root = tmp_path / "leaves"
    for rel in ("a/one.JPG", "a/two.jpg", "b/three.Png", "b/four.jpeg"):
        _image(root / rel)
    samples = read_folder(root, extensions=(".JPG", ".png"))
    assert sorted(_rel(samples, root)) == [("a/one.JPG", "a"), ("a/two.jpg", "a"), ("b/three.Png", "b")]


@pytest.mark.parametrize("layout", [[], ["top.jpg"], [".git/a.jpg", ".ipynb_checkpoints/b.jpg"],
                                    ["healthy/.DS_Store", "healthy/notes.txt"]])
def test_read_folder_without_class_images_names_the_folder(tmp_path, layout):
    root = tmp_path / "my leaves"
    root.mkdir()
    for rel in layout:
        _image(root / rel)
    with pytest.raises(DataError, match="holds no images") as info:
        read_folder(root, extensions=EXTS)
    assert str(root) in str(info.value)


def test_read_folder_missing_root_names_it(tmp_path):
    with pytest.raises(DataError, match="not a folder") as info:
        read_folder(tmp_path / "nowhere", extensions=EXTS)
    assert str(tmp_path / "nowhere") in str(info.value)


# ----------------------------------------------------------------------------- manifest


def _write(path: Path, text: str, *, bom: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return path


def test_relative_paths_resolve_against_root_else_manifest_folder(tmp_path):
    absolute = tmp_path / "elsewhere" / "abs.jpg"
    manifest = _write(tmp_path / "meta" / "labels.csv", f"path,label\nimg/a.jpg,healthy\n{absolute},rust\n")
    data_root = tmp_path / "data"
    with_root = read_manifest(manifest, root=data_root, task="classification")
    assert [s.path for s in with_root] == [data_root / "img" / "a.jpg", absolute]
    without_root = read_manifest(manifest, root=None, task="classification")
    assert [s.path for s in without_root] == [tmp_path / "meta" / "img" / "a.jpg", absolute]
    assert [s.target for s in without_root] == ["healthy", "rust"]


def test_bom_and_spaces_around_column_names_and_values(tmp_path):
    manifest = _write(tmp_path / "labels.csv",
                      " path , value ,  split , group \n a.jpg , 3.5 , Train , plant1 \nb.jpg,4,test,\n", bom=True)
    samples = read_manifest(manifest, root=None, task="regression")
    assert samples == [
        Sample(path=tmp_path / "a.jpg", target=3.5, split="train", group="plant1"),
        Sample(path=tmp_path / "b.jpg", target=4.0, split="test", group=None),
    ]


def test_split_and_group_columns_are_optional(tmp_path):
    manifest = _write(tmp_path / "labels.csv", "label,path\nrust,a.jpg\nhealthy,b.jpg\n")
    samples = read_manifest(manifest, root=None, task="classification")
    assert [(s.path.name, s.target, s.split, s.group) for s in samples] == [
        ("a.jpg", "rust", None, None), ("b.jpg", "healthy", None, None)]


@pytest.mark.parametrize(("task", "header", "missing"), [
    ("classification", "file,label,split", ["path"]),
    ("classification", "path,class", ["label"]),
    ("regression", "path,label", ["value"]),
    ("regression", "image,count", ["path", "value"]),
])
def test_missing_columns_are_named_with_the_columns_found(tmp_path, task, header, missing):
    manifest = _write(tmp_path / "labels.csv", f"{header}\n" + ",".join(["x"] * len(header.split(","))) + "\n")
    with pytest.raises(DataError) as info:
        read_manifest(manifest, root=None, task=task)
    message = str(info.value)
    assert f"missing column(s) {', '.join(missing)}" in message
    for found in header.split(","):
        assert repr(found) in message
    assert str(manifest) in message


def test_bad_classification_rows_are_all_reported_with_line_numbers(tmp_path):
    manifest = _write(tmp_path / "labels.csv", "\n".join([
        "path,label,split",  # line 1
        "a.jpg,healthy,train",  # 2
        "b.jpg,,train",  # 3: empty label
        "c.jpg,rust,valid",  # 4: unknown split
        "",  # 5: blank line (skipped by the CSV reader, still a line of the file)
        "d.jpg,rust,validation",  # 6
        ",rust,test",  # 7: empty path
        "e.jpg,rust,",  # 8: empty split while the column exists
        "f.jpg,rust,val",  # 9
    ]) + "\n")
    with pytest.raises(DataError) as info:
        read_manifest(manifest, root=None, task="classification")
    message = str(info.value)
    assert "5 bad row(s)" in message
    for expected in ("line 3: empty label for b.jpg", "line 4: split 'valid' for c.jpg",
                     "line 6: split 'validation' for d.jpg", "line 7: empty path", "line 8: split '' for e.jpg"):
        assert expected in message
    assert "line 2" not in message and "line 9" not in message
    assert "expected train, val or test" in message


def test_bad_regression_values_are_all_reported_with_line_numbers(tmp_path):
    manifest = _write(tmp_path / "labels.csv",
                      "path,value\na.jpg,4\nb.jpg,four\nc.jpg,nan\nd.jpg,inf\ne.jpg,-Infinity\nf.jpg,\ng.jpg,1e3\n")
    with pytest.raises(DataError) as info:
        read_manifest(manifest, root=None, task="regression")
    message = str(info.value)
    assert "5 bad row(s)" in message
    for line, text in ((3, "'four'"), (4, "'nan'"), (5, "'inf'"), (6, "'-Infinity'")):
        assert f"line {line}: value {text} for" in message
    assert "line 7: empty value for f.jpg" in message
    assert "not a finite number" in message
    assert "line 2" not in message and "line 8" not in message


def test_manifest_without_rows_or_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="has no rows"):
        read_manifest(_write(tmp_path / "labels.csv", "path,label\n"), root=None, task="classification")
    with pytest.raises(DataError, match="does not exist"):
        read_manifest(tmp_path / "nope.csv", root=None, task="classification")
    with pytest.raises(DataError, match="missing column"):
        read_manifest(_write(tmp_path / "empty.csv", ""), root=None, task="classification")
