"""``data.resize`` (crop | pad | stretch) and ``data.augment.keep_whole``: what of a non-square image reaches the
model, in evaluation, in the image cache and in both training paths (batched and per-sample)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from plantpheno.config import AugmentConfig
from plantpheno.data.batch_augment import BatchAugment, augment_batch, make_square, pad_fill
from plantpheno.data.cache import CacheSpec, build_image_cache, cache_key, cache_spec, resize_image
from plantpheno.data.datasets import build_loaders
from plantpheno.data.prepared import prepare_data
from plantpheno.data.images import load_rgb
from plantpheno.data.transforms import eval_transform, square_transform, train_transform

MEAN = (0.5, 0.5, 0.5)
SIDES = {"top": (255, 0, 0), "bottom": (0, 0, 255), "left": (0, 255, 0), "right": (255, 255, 0)}


def framed(width: int, height: int, thickness: int) -> Image.Image:
    """A grey image whose outermost rows and columns are four colours (top red, bottom blue, left green,
    right yellow): a resize that drops any end of the image drops its colour."""
    pixels = np.full((height, width, 3), 128, np.uint8)
    pixels[:thickness] = SIDES["top"]
    pixels[-thickness:] = SIDES["bottom"]
    pixels[thickness:-thickness, :thickness] = SIDES["left"]
    pixels[thickness:-thickness, -thickness:] = SIDES["right"]
    return Image.fromarray(pixels)


def cornered(width: int, height: int, patch: int) -> Image.Image:
    """A grey image with a pure colour patch in each corner (red, green, blue, yellow). Inside a square any
    affine view that keeps the four corners keeps the whole image (the square is convex)."""
    pixels = np.full((height, width, 3), 128, np.uint8)
    pixels[:patch, :patch] = (255, 0, 0)
    pixels[:patch, -patch:] = (0, 255, 0)
    pixels[-patch:, :patch] = (0, 0, 255)
    pixels[-patch:, -patch:] = (255, 255, 0)
    return Image.fromarray(pixels)


def _present(pixels: np.ndarray) -> set[str]:
    """Which corner colours show anywhere in an (H, W, 3) image (blended with grey by resampling or not)."""
    p = pixels.astype(int)
    r, g, b = p[..., 0], p[..., 1], p[..., 2]
    found = {"red": (r - np.maximum(g, b) > 60).any(), "green": (g - np.maximum(r, b) > 60).any(),
             "blue": (b - np.maximum(r, g) > 60).any(), "yellow": (np.minimum(r, g) - b > 60).any()}
    return {name for name, hit in found.items() if hit}


def _hwc(tensor: torch.Tensor) -> np.ndarray:
    """(3, S, S) float in [0, 1] -> (S, S, 3) uint8."""
    return (tensor.permute(1, 2, 0) * 255).round().clamp(0, 255).byte().numpy()


def _sides_seen(pixels: np.ndarray) -> set[str]:
    p = pixels.astype(int)
    return {side for side, colour in SIDES.items() if (np.abs(p - np.array(colour)).sum(-1) < 60).any()}


@pytest.mark.parametrize(("width", "height"), [(150, 50), (40, 120)], ids=["wide", "tall"])
def test_pad_keeps_every_row_and_column_in_evaluation(width, height):
    image = framed(width, height, thickness=6)
    padded = _hwc(square_transform(48, MEAN, "pad")(image))
    # the content is the whole image resized (longer side to 48, torchvision's rounding), centred; the rest fill
    content = np.asarray(resize_image(image, CacheSpec(48, "pad")))
    h, w = content.shape[:2]
    assert max(h, w) == 48 and min(h, w) == int(48 * min(width, height) / max(width, height))
    top, left = (48 - h) // 2, (48 - w) // 2
    assert np.array_equal(padded[top:top + h, left:left + w], content)
    border = np.ones((48, 48), bool)
    border[top:top + h, left:left + w] = False
    assert (padded[border] == pad_fill(MEAN)).all()
    assert _sides_seen(padded) == set(SIDES)  # the first and last rows and columns are all there
    stretched = _hwc(square_transform(48, MEAN, "stretch")(image))
    assert _sides_seen(stretched) == set(SIDES)
    cropped = _hwc(square_transform(48, MEAN, "crop")(image))  # the centre square loses the ends
    lost = {"left", "right"} if width > height else {"top", "bottom"}
    assert _sides_seen(cropped) == set(SIDES) - lost
    # the normalised evaluation transform is the same square, normalised
    torch.testing.assert_close(eval_transform(48, MEAN, (0.25,) * 3, "pad")(image),
                               (square_transform(48, MEAN, "pad")(image) - 0.5) / 0.25)


@pytest.fixture
def odd_images(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    sizes = {"wide.png": (30, 70), "tall.png": (90, 41), "small.png": (12, 20), "square.png": (50, 50)}
    for name, (h, w) in sizes.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / name)
    return sorted(tmp_path.glob("*.png"))


@pytest.mark.parametrize("resize", ["pad", "stretch"])
def test_cache_stores_each_mode_and_evaluation_sees_the_same_pixels(odd_images, tmp_path, resize):
    spec = CacheSpec(32, resize)
    cache = build_image_cache(odd_images, spec, mode="disk", fingerprint="f", directory=tmp_path / "c", workers=2)
    evaluate = eval_transform(32, MEAN, (0.5,) * 3, resize)
    for i, path in enumerate(odd_images):
        image = load_rgb(path)
        stored = cache.array(i)
        assert (max(stored.shape[:2]) if resize == "pad" else stored.shape[:2]) == (32 if resize == "pad" else (32, 32))
        assert np.array_equal(stored, np.asarray(resize_image(image, spec))), path.name
        assert torch.equal(evaluate(cache.image(i)), evaluate(image)), path.name
    keys = {mode: cache_key(odd_images, CacheSpec(32, mode), "f") for mode in ("crop", "pad", "stretch")}
    assert len(set(keys.values())) == 3  # a cache of one mode is never read for another


def test_keep_whole_needs_no_training_margin(make_config, tmp_path):
    config = make_config(data={"root": str(tmp_path), "image_size": 40, "resize": "pad",
                               "augment": {"crop_scale": [0.5, 1.0], "keep_whole": True}})
    assert cache_spec(config.data, train=True) == CacheSpec(40, "pad")
    crops = make_config(data={"root": str(tmp_path), "image_size": 40, "resize": "pad"})
    assert cache_spec(crops.data, train=True) == CacheSpec(46, "pad")


@pytest.fixture(scope="module")
def wide_root(tmp_path_factory) -> Path:
    """Two classes of wide (3:1) framed images, a little different each."""
    root = tmp_path_factory.mktemp("wide")
    rng = np.random.default_rng(3)
    for label in ("a", "b"):
        (root / label).mkdir()
        for i in range(8):
            image = np.asarray(framed(96, 32, 4)).copy()
            image[8:24, 20:76] = rng.integers(60, 200, 3)
            Image.fromarray(image).save(root / label / f"{i}.png")
    return root


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "per-sample"])
def test_pad_training_without_augmentation_sees_the_evaluation_square(make_config, wide_root, batched):
    no_op = {"crop_scale": [1, 1], "rotation": 0, "hflip": 0, "vflip": 0, "color_jitter": 0, "hue": 0,
             "batched": batched}
    config = make_config(data={"root": str(wide_root), "image_size": 48, "resize": "pad", "augment": no_op})
    prepared = prepare_data(config)
    loaders = build_loaders(prepared, config.data, seed=config.seed, output_dir=config.output_dir, mean=MEAN,
                            std=(0.5,) * 3)
    loader = loaders["train"]
    loader.sampler.set_epoch(0)
    order = [index for index, _ in loader.sampler]
    evaluate = eval_transform(48, MEAN, (0.5,) * 3, "pad")
    seen = 0
    for images, _ in loader:
        images = loaders.finish(images, torch.device("cpu"))
        for image in images:
            path = prepared.splits["train"][order[seen]].path
            torch.testing.assert_close(image, evaluate(load_rgb(path)), atol=1e-6, rtol=0)
            assert _sides_seen(_hwc(image * 0.5 + 0.5)) == set(SIDES)
            seen += 1
    assert seen > 0


KEEP_WHOLE = {"crop_scale": (0.5, 1.0), "rotation": 180.0, "hflip": 0.5, "vflip": 0.5, "color_jitter": 0.0,
              "hue": 0.0, "keep_whole": True}


@pytest.mark.parametrize("resize", ["pad", "stretch", "crop"])
def test_keep_whole_keeps_every_corner_in_batched_training(resize):
    image = np.asarray(cornered(144, 48, 12) if resize == "pad" else cornered(64, 64, 10))
    side = 64
    square, content = make_square(np.asarray(resize_image(Image.fromarray(image), CacheSpec(side, resize))), side,
                                  resize, pad_fill(MEAN))
    aug = BatchAugment(48, MEAN, (0.5,) * 3, AugmentConfig(**KEEP_WHOLE), resize)
    seeds = list(range(64))
    out = augment_batch(aug, [square] * len(seeds), seeds, content=np.array([content] * len(seeds)))
    params = aug.params(seeds, np.array([content] * len(seeds)))
    assert np.abs(np.degrees(params[:, 4])).max() > 150 and params[:, 2].max() > 1.1  # turned and zoomed out
    for seed, pixels in zip(seeds, out.permute(0, 2, 3, 1).numpy()):
        assert _present(pixels) == {"red", "green", "blue", "yellow"}, f"seed {seed} lost a corner"
    # the same draws as random crops lose corners: the check above can fail
    crops = BatchAugment(48, MEAN, (0.5,) * 3, AugmentConfig(**{**KEEP_WHOLE, "keep_whole": False}), resize)
    cut = augment_batch(crops, [square] * len(seeds), seeds, content=np.array([content] * len(seeds)))
    assert sum(_present(p) != {"red", "green", "blue", "yellow"} for p in cut.permute(0, 2, 3, 1).numpy()) > 10


def test_keep_whole_keeps_every_corner_in_per_sample_training():
    image = cornered(144, 48, 12)
    transform = train_transform(48, MEAN, (0.5,) * 3, AugmentConfig(**KEEP_WHOLE), "pad")
    lost = []
    for seed in range(48):
        torch.manual_seed(seed)
        if _present(_hwc(transform(image) * 0.5 + 0.5)) != {"red", "green", "blue", "yellow"}:
            lost.append(seed)
    assert not lost, f"seeds {lost} lost a corner"
    crops = train_transform(48, MEAN, (0.5,) * 3, AugmentConfig(**{**KEEP_WHOLE, "keep_whole": False}), "pad")
    torch.manual_seed(0)
    assert any(_present(_hwc(crops(image) * 0.5 + 0.5)) != {"red", "green", "blue", "yellow"} for _ in range(32))


def test_pad_rotation_fills_with_the_letterbox_colour_not_a_mirror():
    # a pure red square rotated 45 degrees with pad: the corners brought in are the fill, never red again
    red = np.zeros((64, 64, 3), np.uint8)
    red[..., 0] = 255
    config = AugmentConfig(**{**KEEP_WHOLE, "keep_whole": False, "crop_scale": (1.0, 1.0), "hflip": 0, "vflip": 0})
    aug = BatchAugment(64, MEAN, (0.5,) * 3, config, "pad")
    params = torch.from_numpy(aug.params([0]))
    params[:, 4] = np.pi / 4
    out = aug.pixels(torch.from_numpy(red).permute(2, 0, 1)[None], params)[0].permute(1, 2, 0).numpy()
    assert tuple(out[0, 0]) == pad_fill(MEAN) and tuple(out[32, 32]) == (255, 0, 0)
    mirrored = BatchAugment(64, MEAN, (0.5,) * 3, config, "crop").pixels(
        torch.from_numpy(red).permute(2, 0, 1)[None], params)[0].permute(1, 2, 0).numpy()
    assert tuple(mirrored[0, 0]) == (255, 0, 0)  # crop mode keeps reflection padding, as before
