"""The pixel measures of the data checks (plantpheno.data.doctor.pixels) and their memo in the image check."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageFilter

from plantpheno.data import images as images_module
from plantpheno.data.doctor.duplicates import close_pairs
from plantpheno.data.doctor.folds import group_folds
from plantpheno.data.doctor.pixels import BORDER_FEATURES, BORDER_WIDTH, ImageStats, border_features, image_stats, phash
from plantpheno.data.images import check_images


def _photo(seed: int, size: tuple[int, int] = (96, 80)) -> Image.Image:
    """A smooth random scene with a few sharp shapes (more like a photo than white noise)."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize(size, Image.Resampling.BICUBIC)
    arr = np.asarray(coarse).copy()
    for _ in range(4):
        x, y = rng.integers(0, size[0] - 20), rng.integers(0, size[1] - 20)
        arr[y:y + 15, x:x + 15] = rng.integers(0, 256, 3)
    return Image.fromarray(arr)


def test_phash_has_the_bits_of_imagehash():
    imagehash = pytest.importorskip("imagehash", reason="imagehash, the reference phash, comes with the test extra")
    for seed in range(12):
        img = _photo(seed, (64 + 8 * seed, 90))
        assert phash(img) == str(imagehash.phash(img))


def test_pixel_hash_is_about_pixels_not_files(tmp_path):
    img = _photo(1)
    img.save(tmp_path / "a.png")
    img.save(tmp_path / "b.bmp")
    img.save(tmp_path / "c.jpg", quality=95)
    a, b, c = (check_images([tmp_path / n])[0].stats for n in ("a.png", "b.bmp", "c.jpg"))
    assert a.pixel_hash == b.pixel_hash  # one picture in two lossless formats
    assert a.pixel_hash != c.pixel_hash  # JPEG changed the pixels ...
    assert (int(a.phash, 16) ^ int(c.phash, 16)).bit_count() <= 2  # ... but not what it looks like


def test_quality_measures_respond_to_what_they_measure():
    img = _photo(3, (128, 128))
    base = image_stats(img)
    dark = image_stats(ImageEnhance.Brightness(img).enhance(0.1))
    bright = image_stats(Image.blend(img, Image.new("RGB", img.size, (255, 255, 255)), 0.9))
    blurred = image_stats(img.filter(ImageFilter.GaussianBlur(4)))
    blank = image_stats(Image.new("RGB", (128, 128), (120, 130, 90)))
    assert dark.dark < 0.2 < base.dark
    assert bright.bright > 0.8 > base.bright
    assert blurred.sharpness < 0.5 * base.sharpness
    assert blank.uniform == 1 and base.uniform < 0.95
    assert (base.width, base.height) == (128, 128)


def test_border_features_see_only_the_border():
    img = _photo(4, (128, 128))
    inside = img.copy()
    inside.paste((255, 0, 0), (16, 16, 112, 112))  # repaint all but a 16-px frame (8 px at 64 px thumbnail scale)
    features = border_features(img)
    assert len(features) == BORDER_FEATURES
    assert np.allclose(features, border_features(inside), atol=1e-3)
    edge = img.copy()
    edge.paste((255, 0, 0), (0, 0, 128, 128 * BORDER_WIDTH // 64))  # the top strip
    assert not np.allclose(features, border_features(edge), atol=1e-3)


def test_stats_round_trip_and_are_memoised_with_the_image_check(tmp_path, monkeypatch):
    paths = []
    for i in range(5):
        paths.append(tmp_path / f"{i}.png")
        _photo(i).save(paths[-1])
    memo = tmp_path / "memo.json"
    first = check_images(paths, memo=memo)
    assert all(ImageStats.from_json(c.stats.to_json()) == c.stats for c in first)
    calls = []
    monkeypatch.setattr(images_module, "image_stats", lambda rgb, **kw: calls.append(1) or image_stats(rgb, **kw))
    second = check_images(paths, memo=memo)
    assert not calls, "a memoised file was decoded again"
    assert [c.stats for c in second] == [c.stats for c in first]
    _photo(9).save(paths[0])  # a changed file is measured afresh
    third = check_images(paths, memo=memo)
    assert len(calls) == 1 and third[0].stats != first[0].stats


def test_a_memo_without_measures_is_measured_again(tmp_path):
    import json

    path = tmp_path / "a.png"
    _photo(0).save(path)
    memo = tmp_path / "memo.json"
    check_images([path], memo=memo)
    data = json.loads(memo.read_text())
    for entry in data["files"].values():
        del entry[3:]  # as the image check wrote it before the data checks existed
    memo.write_text(json.dumps(data))
    assert check_images([path], memo=memo)[0].stats is not None


@pytest.mark.parametrize("distance", [0, 2, 4, 7])
def test_close_pairs_finds_exactly_the_pairs_within_the_distance(distance):
    rng = np.random.default_rng(distance)
    base = rng.integers(0, 2**63, 60, dtype=np.uint64)
    flips = [np.uint64(0)]
    for _ in range(100):  # near copies with a few bits flipped
        bits = rng.choice(64, rng.integers(0, 9), replace=False)
        flips.append(np.uint64(sum(1 << int(b) for b in bits)))
    hashes = np.concatenate([base, base[rng.integers(0, 60, 100)] ^ np.array(flips[1:], dtype=np.uint64)])
    brute = {(i, j) for i in range(len(hashes)) for j in range(i + 1, len(hashes))
             if (int(hashes[i]) ^ int(hashes[j])).bit_count() <= distance}
    assert set(close_pairs(hashes, distance)) == brute


def test_group_folds_keep_groups_together_and_stratify():
    rng = np.random.default_rng(0)
    groups = [f"plant{i // 3}" for i in range(300)]  # 100 plants x 3 views
    labels = np.repeat(rng.integers(0, 4, 100), 3)
    folds = group_folds(labels, groups, folds=5, seed=1)
    assert len(folds) == 5
    seen = np.concatenate([test for _, test in folds])
    assert sorted(seen) == list(range(300))
    for train, test in folds:
        assert not {groups[i] for i in train} & {groups[i] for i in test}
        share = np.bincount(labels[test], minlength=4) / np.bincount(labels, minlength=4)
        assert np.all(np.abs(share - 0.2) < 0.08)
    for train, test in group_folds(None, groups, folds=4, seed=0):
        assert not {groups[i] for i in train} & {groups[i] for i in test}
        assert 60 <= len(test) <= 90


def test_a_large_jpeg_is_checked_at_a_reduced_scale_but_recorded_at_its_own_size(tmp_path, monkeypatch):
    """The check pass decodes a large JPEG in draft mode (still at least the measures' 256 px working size on its
    shorter side); the data checks still see the file's own width and height, turned by EXIF as training
    turns it, and measures close to those of the full decode."""
    from plantpheno.data.doctor.pixels import QUALITY_SIDE

    photo = _photo(3, (2400, 1800))
    plain, turned = tmp_path / "plain.jpg", tmp_path / "turned.jpg"
    photo.save(plain, quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    photo.save(turned, quality=95, exif=exif)
    seen: list[tuple[int, int]] = []
    monkeypatch.setattr(images_module, "image_stats",
                        lambda rgb, **kw: seen.append(rgb.size) or image_stats(rgb, **kw))
    a, b = check_images([plain, turned])
    assert a.problem is None and b.problem is None
    assert (a.stats.width, a.stats.height) == (2400, 1800)
    assert (b.stats.width, b.stats.height) == (1800, 2400)
    # 1/4 scale: the shorter side keeps >= 256 px (450); 1/8 would leave 225
    assert seen[0] == (600, 450) and seen[1] == (450, 600)
    assert min(seen[0]) >= QUALITY_SIDE
    with Image.open(plain) as full:
        reference = image_stats(full.convert("RGB"))
    assert abs(reference.sharpness - a.stats.sharpness) < 0.25 * max(reference.sharpness, 1e-3)
    assert bin(int(reference.phash, 16) ^ int(a.stats.phash, 16)).count("1") <= 6  # near-duplicate distance
