"""Tests for plantpheno.data.images (decoding to RGB, checking files) and bad-file handling in prepare_data."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from plantpheno.data.prepared import prepare_data, write_data_files
from plantpheno.data.images import check_image, check_images, load_rgb, to_rgb
from plantpheno.errors import DataError
from plantpheno.run.folder import RunDir

ORIENTATION = 0x0112
RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def _mean_colour(img: Image.Image, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    return np.asarray(img, dtype=np.float64)[y0:y1, x0:x1].reshape(-1, 3).mean(axis=0)


def _close(colour: np.ndarray, expected: tuple[int, int, int], tol: float = 30) -> bool:
    return bool(np.abs(colour - np.array(expected)).max() <= tol)


def _jpeg_bytes(size: tuple[int, int] = (40, 30), colour: tuple[int, int, int] = (30, 140, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


# ----------------------------------------------------------------------------- EXIF orientation

# stored image 40 wide x 24 high, red block in the stored top-left, blue block in the stored bottom-left;
# expected: displayed size, and (red, blue) corners after the orientation is applied
ORIENTATIONS = {
    1: ((40, 24), "top-left", "bottom-left"),
    3: ((40, 24), "bottom-right", "top-right"),  # rotate 180
    6: ((24, 40), "top-right", "top-left"),  # rotate 90 clockwise
    8: ((24, 40), "bottom-left", "bottom-right"),  # rotate 90 counter-clockwise
}


def _corner_box(size: tuple[int, int], corner: str, side: int = 8) -> tuple[int, int, int, int]:
    w, h = size
    x0 = 0 if corner.endswith("left") else w - side
    y0 = 0 if corner.startswith("top") else h - side
    return x0 + 1, y0 + 1, x0 + side - 1, y0 + side - 1  # stay off the block edge (JPEG ringing)


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_exif_orientation_is_applied(tmp_path, orientation):
    img = Image.new("RGB", (40, 24), WHITE)
    img.paste(RED, (0, 0, 8, 8))
    img.paste(BLUE, (0, 16, 8, 24))
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    path = tmp_path / "leaf.jpg"
    img.save(path, format="JPEG", quality=95, exif=exif.tobytes())
    with Image.open(path) as raw:
        assert raw.size == (40, 24) and raw.getexif()[ORIENTATION] == orientation  # stored unrotated

    size, red_corner, blue_corner = ORIENTATIONS[orientation]
    for loaded in (load_rgb(path), to_rgb(Image.open(path))):
        assert loaded.mode == "RGB"
        assert loaded.size == size
        assert _close(_mean_colour(loaded, _corner_box(size, red_corner)), RED)
        assert _close(_mean_colour(loaded, _corner_box(size, blue_corner)), BLUE)
        others = {"top-left", "top-right", "bottom-left", "bottom-right"} - {red_corner, blue_corner}
        for corner in others:
            assert _close(_mean_colour(loaded, _corner_box(size, corner)), WHITE)


# ----------------------------------------------------------------------------- mode conversion


def _save(img: Image.Image, path: Path, **kwargs) -> Path:
    img.save(path, **kwargs)
    return path


def test_grayscale_l_becomes_rgb(tmp_path):
    arr = np.array([[0, 77, 255]], dtype=np.uint8).repeat(5, axis=0)
    path = _save(Image.fromarray(arr, mode="L"), tmp_path / "g.png")
    out = load_rgb(path)
    assert out.mode == "RGB" and out.size == (3, 5)
    assert np.asarray(out)[0].tolist() == [[0, 0, 0], [77, 77, 77], [255, 255, 255]]


def test_grayscale_with_alpha_is_composited_onto_black(tmp_path):
    img = Image.new("LA", (4, 3), (200, 255))
    img.putpixel((1, 1), (200, 0))  # fully transparent
    img.putpixel((2, 1), (200, 128))  # half transparent
    path = _save(img, tmp_path / "la.png")
    with Image.open(path) as check:
        assert check.mode == "LA"
    out = np.asarray(load_rgb(path)).astype(int)
    assert out.shape == (3, 4, 3)
    assert out[0, 0].tolist() == [200, 200, 200]
    assert out[1, 1].tolist() == [0, 0, 0]
    assert np.all(np.abs(out[1, 2] - 100) <= 2)


def test_rgba_alpha_is_composited_onto_black(tmp_path):
    img = Image.new("RGBA", (5, 2), (0, 255, 0, 255))
    img.putpixel((0, 0), (255, 0, 0, 0))  # fully transparent red
    img.putpixel((1, 0), (255, 0, 0, 128))  # half transparent red
    path = _save(img, tmp_path / "rgba.png")
    out = load_rgb(path)
    assert out.mode == "RGB" and out.size == (5, 2)
    px = np.asarray(out).astype(int)
    assert px[0, 0].tolist() == [0, 0, 0]
    assert abs(px[0, 1, 0] - 128) <= 2 and px[0, 1, 1:].tolist() == [0, 0]
    assert px[1, 3].tolist() == [0, 255, 0]


def _palette_image() -> Image.Image:
    img = Image.new("P", (6, 4), 1)
    img.putpalette([10, 20, 30, 0, 200, 0, 250, 100, 0] + [0] * (256 * 3 - 9))
    img.putpixel((0, 0), 0)
    img.putpixel((5, 3), 2)
    return img


@pytest.mark.parametrize("suffix", [".png", ".gif"])
def test_palette_without_transparency_keeps_colours(tmp_path, suffix):
    path = _save(_palette_image(), tmp_path / f"p{suffix}")
    with Image.open(path) as check:
        assert check.mode == "P" and "transparency" not in check.info
    out = np.asarray(load_rgb(path))
    assert out.shape == (4, 6, 3)
    assert out[0, 0].tolist() == [10, 20, 30]
    assert out[1, 1].tolist() == [0, 200, 0]
    assert out[3, 5].tolist() == [250, 100, 0]


@pytest.mark.parametrize("suffix", [".png", ".gif"])
def test_palette_with_transparency_is_composited_onto_black(tmp_path, suffix):
    path = _save(_palette_image(), tmp_path / f"p{suffix}", transparency=0)
    with Image.open(path) as check:
        assert check.mode == "P" and check.info.get("transparency") == 0
    out = load_rgb(path)
    assert out.mode == "RGB" and out.size == (6, 4)
    px = np.asarray(out)
    assert px[0, 0].tolist() == [0, 0, 0]  # the transparent entry, not its palette colour (10, 20, 30)
    assert px[1, 1].tolist() == [0, 200, 0]
    assert px[3, 5].tolist() == [250, 100, 0]


def test_16_bit_png_is_rescaled(tmp_path):
    arr = np.array([[0, 32768, 65535], [257, 1000, 65535]], dtype=np.uint16)
    path = _save(Image.fromarray(arr), tmp_path / "depth.png")
    with Image.open(path) as check:
        assert check.mode.startswith("I")
    out = load_rgb(path)
    assert out.mode == "RGB" and out.size == (3, 2)
    grey = np.asarray(out)[..., 0].astype(int)
    assert np.array_equal(np.asarray(out)[..., 0], np.asarray(out)[..., 2])
    assert grey[0, 0] == 0 and grey[0, 2] == 255
    assert abs(grey[0, 1] - 128) <= 1
    assert grey[1, 0] == 1 and abs(grey[1, 1] - 4) <= 1


def test_dark_16_bit_png_stays_dark(tmp_path):
    """A 16-bit image whose values all lie below 256 is nearly black, not an 8-bit image in disguise."""
    arr = np.array([[0, 100, 255], [255, 200, 50]], dtype=np.uint16)
    path = _save(Image.fromarray(arr), tmp_path / "dark.png")
    with Image.open(path) as check:
        assert check.mode == "I;16"
    assert np.asarray(load_rgb(path)).max() <= 1


def test_32_bit_integer_tiff_is_rescaled(tmp_path):
    arr = np.array([[0, 30000, 65535, 70000]], dtype=np.int32)
    path = _save(Image.fromarray(arr), tmp_path / "i32.tif")
    with Image.open(path) as check:
        assert check.mode == "I"
    out = load_rgb(path)
    assert out.mode == "RGB" and out.size == (4, 1)
    grey = np.asarray(out)[0, :, 0].astype(int)
    assert grey[0] == 0 and grey[2] == 255 and grey[3] == 255
    assert abs(grey[1] - 117) <= 1


def test_float_tiff_is_rescaled(tmp_path):
    arr = np.array([[0.0, 0.25, 0.5, 1.0]], dtype=np.float32)
    path = _save(Image.fromarray(arr), tmp_path / "f.tif")
    with Image.open(path) as check:
        assert check.mode == "F"
    out = load_rgb(path)
    assert out.mode == "RGB" and out.size == (4, 1)
    grey = np.asarray(out)[0, :, 0].astype(int)
    assert grey[0] == 0 and grey[3] == 255
    assert abs(grey[1] - 64) <= 1 and abs(grey[2] - 128) <= 1


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    img = Image.new("CMYK", (10, 6), (255, 0, 0, 0))  # cyan
    img.paste((0, 0, 0, 255), (0, 0, 5, 6))  # black on the left half
    path = _save(img, tmp_path / "cmyk.jpg", quality=95)
    with Image.open(path) as check:
        assert check.mode == "CMYK"
    out = load_rgb(path)
    assert out.mode == "RGB" and out.size == (10, 6)
    assert _close(_mean_colour(out, (6, 0, 10, 6)), (0, 255, 255))
    assert _close(_mean_colour(out, (0, 0, 3, 6)), (0, 0, 0))


@pytest.mark.parametrize("mode", ["1", "L", "LA", "PA", "RGBA", "RGBa", "La", "I", "I;16", "I;16B", "F", "CMYK",
                                  "YCbCr", "HSV"])
def test_to_rgb_gives_8_bit_rgb_of_same_size_for_every_mode(mode):
    img = Image.new(mode, (7, 3))
    out = to_rgb(img)
    assert out.mode == "RGB" and out.size == (7, 3)
    assert np.asarray(out).dtype == np.uint8


# ----------------------------------------------------------------------------- checking files


def _corrupt_tiff() -> bytes:
    """A TIFF whose StripOffsets tag has the wrong type: Pillow raises TypeError (not OSError) decoding it."""
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (10, 120, 20)).save(buf, format="TIFF")
    data = bytearray(buf.getvalue())
    assert data[:4] == b"II*\x00"
    ifd = int.from_bytes(data[4:8], "little")
    for i in range(int.from_bytes(data[ifd:ifd + 2], "little")):
        entry = ifd + 2 + 12 * i
        if int.from_bytes(data[entry:entry + 2], "little") == 273:  # StripOffsets
            data[entry + 2:entry + 4] = (2).to_bytes(2, "little")  # type ASCII instead of LONG
            return bytes(data)
    raise AssertionError("no StripOffsets tag")


def _write_bad_files(folder: Path) -> dict[Path, str]:
    """Create one file of each bad kind in ``folder``; return path -> expected words of the problem."""
    folder.mkdir(parents=True, exist_ok=True)
    jpeg = _jpeg_bytes()
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (folder / "notes.jpg").write_text("these are field notes, not a photo\n")
    (folder / "broken.tif").write_bytes(_corrupt_tiff())
    return {
        folder / "empty.jpg": "empty",
        folder / "truncated.jpg": "truncated",
        folder / "notes.jpg": "not an image",
        folder / "broken.tif": "corrupt",
    }


def test_check_image_good_file_gives_hash_and_no_problem(tmp_path):
    path = tmp_path / "leaf.jpg"
    path.write_bytes(_jpeg_bytes())
    check = check_image(path)
    assert check.problem is None
    assert check.path == path
    assert check.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_check_image_reports_each_kind_of_bad_file(tmp_path):
    expected = _write_bad_files(tmp_path)
    (tmp_path / "x.jpg").mkdir()
    expected[tmp_path / "x.jpg"] = "directory"
    expected[tmp_path / "missing.jpg"] = "not found"
    for path, words in expected.items():
        check = check_image(path)  # never raises
        assert check.path == path
        assert check.problem is not None and words in check.problem, (path.name, check.problem)
    assert check_image(tmp_path / "empty.jpg").sha256 is None
    assert check_image(tmp_path / "missing.jpg").sha256 is None


def test_check_images_keeps_input_order_with_many_paths(tmp_path):
    bad = list(_write_bad_files(tmp_path / "bad"))
    paths = []
    for i in range(90):
        if i % 7 == 3:
            paths.append(bad[i % len(bad)])
        elif i % 11 == 5:
            paths.append(tmp_path / f"missing_{i}.jpg")
        else:
            path = tmp_path / f"leaf_{i:03d}.png"
            Image.new("RGB", (8 + i % 5, 8), (i, 2 * i, 255 - i)).save(path)
            paths.append(path)
    assert len(paths) > 64
    expected = [check_image(p) for p in paths]
    assert len({c.sha256 for c in expected if c.problem is None}) > 50  # distinct files: order is observable
    for workers in (None, 4):
        results = check_images(paths, workers=workers)
        assert [r.path for r in results] == paths
        assert results == expected


# ----------------------------------------------------------------------------- bad files through prepare_data


@pytest.fixture
def dirty_root(tmp_path, disease_root) -> tuple[Path, dict[Path, str]]:
    """A copy of the synthetic disease folder with bad files added to one class folder."""
    root = tmp_path / "leaves"
    shutil.copytree(disease_root, root)
    class_dir = sorted(p for p in root.iterdir() if p.is_dir())[0]
    bad = _write_bad_files(class_dir)
    (class_dir / "x.jpg").mkdir()  # a folder, not a file: never an image sample
    return root, bad


def _good_count(root: Path, bad: dict[Path, str]) -> int:
    return sum(1 for p in root.rglob("*") if p.is_file() and p not in bad)


def test_prepare_data_error_names_every_bad_file(make_config, dirty_root):
    root, bad = dirty_root
    config = make_config(data={"root": str(root), "on_bad_image": "error"})
    with pytest.raises(DataError) as info:
        prepare_data(config)
    message = str(info.value)
    assert f"{len(bad)} of {_good_count(root, bad) + len(bad)}" in message
    assert "on_bad_image=skip" in message
    lines = message.splitlines()
    for path, words in bad.items():
        line = next((ln for ln in lines if str(path) in ln), None)
        assert line is not None, f"{path} not named in:\n{message}"
        assert words in line
    assert "x.jpg" not in message


def test_prepare_data_error_names_missing_and_directory_paths_of_a_manifest(make_config, tmp_path, disease_root):
    root = tmp_path / "leaves"
    shutil.copytree(disease_root, root)
    rows = [(p.relative_to(root).as_posix(), p.parent.name) for p in sorted(root.rglob("*.jpg"))]
    (root / "rust_spot" / "x.jpg").mkdir(parents=True)
    rows += [("gone/leaf.jpg", "healthy"), ("rust_spot/x.jpg", "healthy")]
    manifest = tmp_path / "labels.csv"
    manifest.write_text("path,label\n" + "".join(f"{p},{label}\n" for p, label in rows))
    with pytest.raises(DataError) as info:
        prepare_data(make_config(data={"root": str(root), "manifest": str(manifest)}))
    message = str(info.value)
    assert f"{root / 'gone' / 'leaf.jpg'}: file not found" in message
    assert f"{root / 'rust_spot' / 'x.jpg'}: is a directory" in message


def test_prepare_data_skip_keeps_good_samples_and_lists_bad_files(make_config, dirty_root, tmp_path):
    root, bad = dirty_root
    config = make_config(data={"root": str(root), "on_bad_image": "skip"})
    prepared = prepare_data(config)
    kept = [s.path for split in prepared.splits.values() for s in split]
    assert len(kept) == len(set(kept)) == _good_count(root, bad)
    assert not set(kept) & set(bad)
    assert dict(prepared.bad_files).keys() == bad.keys()

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    run = RunDir(run_dir)
    write_data_files(prepared, run)
    with run.bad_images.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {Path(r["path"]) for r in rows} == set(bad)
    for row in rows:
        assert bad[Path(row["path"])] in row["problem"]
    with run.split_manifest.open(newline="") as fh:
        split_rows = list(csv.DictReader(fh))
    assert {Path(r["path"]) for r in split_rows} == {p.resolve() for p in kept}
    info = json.loads(run.dataset_info.read_text())
    assert info["skipped_bad_images"] == len(bad)
    assert sum(info["num_images"].values()) == len(kept)
    assert info["fingerprint"] == prepared.fingerprint


def test_prepare_data_without_bad_files_writes_no_bad_images_csv(make_config, disease_root, tmp_path):
    prepared = prepare_data(make_config(data={"root": str(disease_root), "on_bad_image": "skip"}))
    assert prepared.bad_files == []
    run = RunDir(tmp_path)
    write_data_files(prepared, run)
    assert run.split_manifest.is_file() and run.dataset_info.is_file()
    assert not run.bad_images.exists()


def test_check_memo_skips_unchanged_files_and_rechecks_changed_or_bad_ones(tmp_path, monkeypatch):
    import os

    import plantpheno.data.images as images

    paths = [tmp_path / f"leaf{i}.jpg" for i in range(4)]
    for i, path in enumerate(paths):
        path.write_bytes(_jpeg_bytes(colour=(30 + 40 * i, 140, 40)))
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    memo = tmp_path / "cache" / "image_checks.json"
    first = check_images([*paths, bad], memo=memo)
    assert first[-1].problem is not None and all(c.problem is None for c in first[:-1])
    assert memo.is_file()

    decoded: list[Path] = []
    real = images.check_image
    monkeypatch.setattr(images, "check_image", lambda p, **kw: decoded.append(p) or real(p, **kw))
    again = check_images([*paths, bad], memo=memo)
    assert [c.sha256 for c in again] == [c.sha256 for c in first]
    assert decoded == [bad]  # passed files are not decoded again; a bad file is always re-checked

    decoded.clear()
    paths[1].write_bytes(_jpeg_bytes(size=(44, 30), colour=(200, 20, 20)))  # new content, size and mtime
    os.utime(paths[2], ns=(paths[2].stat().st_atime_ns, paths[2].stat().st_mtime_ns + 10**9))  # touched only
    third = check_images([*paths, bad], memo=memo)
    assert set(decoded) == {paths[1], paths[2], bad}
    assert third[1].sha256 != first[1].sha256 and third[2].sha256 == first[2].sha256

    memo.write_text("{not json")  # an unreadable memo means: check everything, and write a new one
    decoded.clear()
    assert [c.sha256 for c in check_images(paths, memo=memo)] == [c.sha256 for c in third[:4]]
    assert set(decoded) == set(paths)
    assert json.loads(memo.read_text())["version"] == 1


# ----------------------------------------------------------------------------- size limits and reduced decoding


def _noise_jpeg(path: Path, size: tuple[int, int]) -> Path:
    noise = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(noise).save(path, format="JPEG", quality=90)
    return path


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_only_when_a_small_input_is_needed(tmp_path):
    path = _noise_jpeg(tmp_path / "big.jpg", (1600, 1200))
    assert load_rgb(path).size == (1600, 1200)
    assert load_rgb(path, min_side=100).size == (400, 300)  # 1/4 scale: the shorter side keeps >= 2 x 100
    assert load_rgb(path, min_side=400).size == (1600, 1200)  # 1/2 scale would leave < 2 x 400
    png = tmp_path / "big.png"
    Image.open(path).save(png)
    assert load_rgb(png, min_side=100).size == (1600, 1200)  # only JPEG has a reduced decode


def test_the_check_pass_still_catches_a_truncated_large_jpeg(tmp_path):
    path = _noise_jpeg(tmp_path / "big.jpg", (1600, 1200))
    assert check_image(path).problem is None
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert "truncated" in check_image(path).problem


def test_an_image_over_the_pixel_limit_is_refused_by_its_header(tmp_path):
    path = tmp_path / "wide.png"
    Image.new("L", (300, 200)).save(path)
    problem = check_image(path, max_pixels=59_999).problem
    assert problem.startswith("image too large: 300 x 200 = 60,000 pixels, above data.max_image_pixels = 59,999")
    assert check_image(path, max_pixels=60_000).problem is None
