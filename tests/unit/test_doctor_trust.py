"""The data checks are sure before they accuse: a perceptual-hash candidate needs colour confirmation to be a
leak, and photos of small plants on a plain white or black background are not called blank, dark or washed out."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageEnhance

from conftest import tiny_config
from plantpheno.config import validate_config
from plantpheno.data.prepared import prepare_data
from plantpheno.data.doctor.check import check_data
from plantpheno.data.doctor.duplicates import CONFIRM_SIMILARITY
from plantpheno.data.doctor.pixels import colour_thumb, image_stats, thumb_similarity
from plantpheno.data.synth import disease_example, synthesize_disease


def _check(tmp_path: Path, **data):
    config = validate_config(tiny_config(tmp_path, data=data))
    return check_data(prepare_data(config), config.data, seed=config.seed)


def _similarity(a: Image.Image, b: Image.Image) -> float:
    return thumb_similarity(colour_thumb(image_stats(a)), colour_thumb(image_stats(b)))


def _resaved(img: Image.Image, scale: float, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS).save(
        buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def test_copies_are_confirmed_and_two_leaves_on_one_dark_background_are_not():
    leaf = disease_example("rust", 3, image_size=128)[0]
    for copy in (_resaved(leaf, 0.8, 75), _resaved(leaf, 0.5, 60), ImageEnhance.Brightness(leaf).enhance(1.3),
                 ImageEnhance.Brightness(leaf).enhance(0.7), ImageEnhance.Contrast(leaf).enhance(0.8)):
        assert _similarity(leaf, copy) >= CONFIRM_SIMILARITY
    # seed 0 of `plantpheno data synth`: a healthy and a blighted leaf, each alone on dark cloth, 4 bits apart
    healthy, blight = disease_example("healthy", 38)[0], disease_example("blight", 10)[0]
    a, b = image_stats(healthy), image_stats(blight)
    assert (int(a.phash, 16) ^ int(b.phash, 16)).bit_count() <= 4  # the hash alone calls them copies
    assert _similarity(healthy, blight) < 0.8


def test_a_hash_candidate_that_colour_does_not_confirm_is_a_note_not_a_leak(tmp_path):
    root = synthesize_disease(tmp_path / "leaves", seed=0)  # the defaults of `plantpheno data synth`
    report = _check(tmp_path, root=str(root))
    assert not report.errors, [f.line() for f in report.errors]
    (note,) = [f for f in report.findings if f.check == "near_duplicates.unconfirmed"]
    assert note.severity == "info"
    assert {frozenset(Path(p).name for p in g) for g in note.files} == {
        frozenset({"healthy_0038.jpg", "blight_0010.jpg"})}
    assert "thumbnail correlation 0.7" in note.file_notes[0][0]


def _seedling(background: int, radius: float, seed: int, size: int = 384) -> Image.Image:
    """A top-down photo of a seedling (three leaves and a centre) on plain paper or cloth, with sensor noise."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (size, size), (background,) * 3)
    draw = ImageDraw.Draw(img)
    cx, cy, r = size / 2 + rng.uniform(-20, 20), size / 2 + rng.uniform(-20, 20), radius * size
    for angle in rng.uniform(0, 2 * np.pi) + np.arange(3) * 2 * np.pi / 3:
        x, y = cx + np.cos(angle) * r * 0.6, cy + np.sin(angle) * r * 0.6
        draw.ellipse((x - r * 0.4, y - r * 0.3, x + r * 0.4, y + r * 0.3), fill=(60, 140, 45))
    draw.ellipse((cx - r * 0.15, cy - r * 0.15, cx + r * 0.15, cy + r * 0.15), fill=(150, 180, 70))
    noisy = np.asarray(img, dtype=np.float64) + rng.normal(0, 3, (size, size, 1))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


@pytest.mark.parametrize("background", [240, 20])
def test_small_plants_on_white_or_black_are_not_blank_dark_or_washed_out(tmp_path, background):
    root = tmp_path / "plants"
    for c, cls in enumerate(("young", "old")):
        (root / cls).mkdir(parents=True)
        for i in range(12):  # the plant covers about 0.3 % to 4 % of the photo
            _seedling(background, 0.06 + 0.02 * i + 0.01 * c, seed=100 * c + i).save(root / cls / f"{i}.png")
    # an empty grey tray (an empty white one is reported as washed out, a black one as dark: once, for exposure)
    flat = np.clip(128 + np.random.default_rng(0).normal(0, 6, (384, 384, 1)), 0, 255).astype(np.uint8)
    Image.fromarray(np.repeat(flat, 3, axis=2)).save(root / "young" / "empty.png")
    report = _check(tmp_path, root=str(root), checks={"ignore": ["near_duplicates"]})
    quality = [f for f in report.findings if f.check.startswith("quality.")]
    assert [(f.check, f.severity) for f in quality] == [("quality.low_information", "warning")], \
        [f.line() for f in quality]
    assert [Path(g[0]).name for g in quality[0].files] == ["empty.png"]
    assert "nearly uniform (100.00% of pixels within 32 levels of the median colour)" in quality[0].file_notes[0][0]
    assert "lens-cap" not in quality[0].fix
