"""Batched training augmentations: coordinates, determinism, and agreement with torchvision's colour ops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from plantpheno.config import AugmentConfig
from plantpheno.data.batch_augment import (
    _BRIGHT,
    _CONTRAST,
    _HUE,
    _SAT,
    NUM_PARAMS,
    BatchAugment,
    _hue_matrix,
    affine_grid,
    augment_batch,
    center_square,
    to_device,
    uniforms,
)

NO_AUG = {"crop_scale": (1.0, 1.0), "rotation": 0.0, "hflip": 0.0, "vflip": 0.0, "color_jitter": 0.0, "hue": 0.0}


def _images(n: int, side: int, seed: int = 0) -> np.ndarray:
    """Smooth random colour images (as photos are: neighbouring pixels alike), uint8 (N, side, side, 3)."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 6, 6, generator=gen)
    fine = torch.nn.functional.interpolate(coarse, size=(side, side), mode="bicubic", align_corners=False)
    return (fine.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()


def _identity_params(n: int) -> torch.Tensor:
    p = torch.zeros(n, NUM_PARAMS, dtype=torch.float64)
    p[:, 2:4] = 1.0  # half-extent of the crop: the whole square
    p[:, [_BRIGHT, _CONTRAST, _SAT]] = 1.0
    return p


def _as_float(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255


@pytest.mark.parametrize("size", [1, 7, 32])
def test_affine_grid_equals_torch(size):
    gen = torch.Generator().manual_seed(size)
    theta = torch.randn(5, 2, 3, generator=gen)
    expected = torch.nn.functional.affine_grid(theta, [5, 3, size, size], align_corners=False)
    torch.testing.assert_close(affine_grid(theta, size), expected, rtol=0, atol=1e-6)


def test_no_augmentation_returns_the_normalised_pixels():
    images = _images(3, 32)
    aug = BatchAugment(32, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), AugmentConfig(**NO_AUG))
    out = augment_batch(aug, list(images), seeds=[1, 2, 3])
    assert out.dtype == torch.uint8 and torch.equal(out, torch.from_numpy(images).permute(0, 3, 1, 2))
    mean, std = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1), torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    normalised = to_device(out, torch.device("cpu"), augment=aug, memory_format=torch.channels_last)
    assert normalised.dtype == torch.float32 and normalised.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(normalised, (_as_float(images) - mean) / std)
    with pytest.raises(ValueError, match="without the loader's augmenter"):
        to_device(out, torch.device("cpu"), augment=None)


def test_augmented_pixels_are_rounded_to_the_nearest_level():
    # a horizontal ramp sampled halfway between pixels: the mean of neighbours, rounded half up
    ramp = torch.arange(0, 64, dtype=torch.uint8).mul(3).view(1, 1, 1, 64).expand(1, 3, 64, 64).contiguous()
    aug = BatchAugment(32, (0, 0, 0), (1, 1, 1), AugmentConfig(**NO_AUG))
    p = _identity_params(1)
    p[0, 0] = 1 / 64  # shift the window by half a pixel: each output pixel reads 2 columns equally
    p[0, 2] = p[0, 3] = 0.5
    out = aug.pixels(ramp, p)
    assert out.dtype == torch.uint8
    # columns 16..47 at centres c + 0.5: (3c + 3(c+1)) / 2 = 3c + 1.5, rounded up
    expected = (torch.arange(16, 48) * 3 + 2).to(torch.uint8)
    assert torch.equal(out[0, 0, 5], expected)


def test_flips_mirror_the_image_exactly():
    images = torch.from_numpy(_images(2, 16)).permute(0, 3, 1, 2)
    aug = BatchAugment(16, (0, 0, 0), (1, 1, 1), AugmentConfig(**NO_AUG))
    p = _identity_params(2)
    p[0, 5] = 1.0  # horizontal flip
    p[1, 6] = 1.0  # vertical flip
    out = aug(images, p)
    x = images.float() / 255
    torch.testing.assert_close(out[0], x[0].flip(-1), atol=1e-6, rtol=0)
    torch.testing.assert_close(out[1], x[1].flip(-2), atol=1e-6, rtol=0)


def test_crop_window_lands_on_the_expected_pixels():
    # a window of 32x32 pixels starting at (x=8, y=16) of a 64 px square, sampled at 32 px: a 1:1 copy
    images = torch.from_numpy(_images(1, 64)).permute(0, 3, 1, 2)
    aug = BatchAugment(32, (0, 0, 0), (1, 1, 1), AugmentConfig(**NO_AUG))
    p = _identity_params(1)
    p[0, 0], p[0, 1] = (8 + 16) / 64 * 2 - 1, (16 + 16) / 64 * 2 - 1
    p[0, 2] = p[0, 3] = 0.5
    torch.testing.assert_close(aug(images, p)[0], images[0, :, 16:48, 8:40].float() / 255, atol=1e-5, rtol=0)


def test_a_sample_comes_out_the_same_in_any_batch():
    images = list(_images(4, 40))
    aug = BatchAugment(32, (0.5,) * 3, (0.5,) * 3, AugmentConfig())
    together = augment_batch(aug, images, seeds=[10, 11, 12, 13])
    alone = augment_batch(aug, images[2:3], seeds=[12])
    torch.testing.assert_close(together[2:3], alone, atol=1e-6, rtol=0)
    again = augment_batch(aug, images, seeds=[10, 11, 12, 13])
    assert torch.equal(together, again)
    other_seed = augment_batch(aug, images[2:3], seeds=[99])
    assert not torch.allclose(alone, other_seed)


def test_uniform_draws_look_uniform_and_independent():
    u = uniforms(np.arange(20_000), 29)  # consecutive seeds, as a user's small seeds would be
    assert u.shape == (20_000, 29) and u.min() >= 0 and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.002
    assert np.histogram(u, bins=10, range=(0, 1))[0].min() > 0.095 * u.size
    assert abs(np.corrcoef(u[:, 0], u[:, 1])[0, 1]) < 0.03  # draws of one sample
    assert abs(np.corrcoef(u[:-1, 0], u[1:, 0])[0, 1]) < 0.03  # neighbouring seeds
    assert np.array_equal(uniforms([5], 29), uniforms([9, 5], 29)[1:])


def test_parameters_follow_the_config_ranges():
    config = AugmentConfig(crop_scale=(0.5, 0.8), rotation=15, hflip=0.5, vflip=0.0, color_jitter=0.3, hue=0.05)
    aug = BatchAugment(32, (0.5,) * 3, (0.5,) * 3, config)
    p = aug.params(range(400))
    assert np.array_equal(aug.params([7, 3])[1], aug.params([3])[0])  # a row depends on its own seed only
    area = p[:, 2] * p[:, 3]
    assert area.min() >= 0.5 - 1e-9 and area.max() <= 0.8 + 1e-9
    assert (np.abs(p[:, 0]) + p[:, 2] <= 1 + 1e-9).all() and (np.abs(p[:, 1]) + p[:, 3] <= 1 + 1e-9).all()
    assert np.abs(np.degrees(p[:, 4])).max() <= 15 + 1e-9
    assert 0.35 < p[:, 5].mean() < 0.65 and p[:, 6].max() == 0
    for col in (_BRIGHT, _CONTRAST, _SAT):
        assert p[:, col].min() >= 0.7 - 1e-9 and p[:, col].max() <= 1.3 + 1e-9
    assert np.abs(p[:, _HUE]).max() <= 0.05


@pytest.mark.parametrize(("factors", "mean_tolerance"), [
    ((1.2, 1.0, 1.0, 0.0), 1e-4), ((1.0, 0.8, 1.0, 0.0), 1e-4), ((1.0, 1.0, 1.25, 0.0), 1e-4),  # exact alone
    ((1.0, 1.0, 1.0, 0.02), 4 / 255),  # hue turned in YIQ space, not HSV
    ((1.2, 0.8, 1.25, 0.02), 7 / 255), ((0.8, 1.2, 0.75, -0.02), 7 / 255),  # + clipping only at the end
])
def test_colour_jitter_agrees_with_torchvision(factors, mean_tolerance):
    from sklearn.datasets import load_sample_image  # natural photos (vivid ones: a hard case for the hue)

    brightness, contrast, saturation, hue = factors
    photos = [TF.center_crop(TF.resize(torch.from_numpy(load_sample_image(name).copy()).permute(2, 0, 1), [48]), [48])
              for name in ("flower.jpg", "china.jpg")]
    images = torch.stack(photos)
    aug = BatchAugment(48, (0, 0, 0), (1, 1, 1), AugmentConfig(**{**NO_AUG, "color_jitter": 0.3, "hue": 0.05}))
    p = _identity_params(2)
    p[:, _BRIGHT], p[:, _CONTRAST], p[:, _SAT], p[:, _HUE] = brightness, contrast, saturation, hue
    out = aug(images, p)
    x = images.float() / 255
    ref = TF.adjust_hue(TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(x, brightness), contrast),
                                             saturation), hue)
    ref = (ref * 255).round() / 255  # the augmenter rounds to uint8 levels, as torchvision does on uint8 images
    assert (out - ref).abs().mean() < mean_tolerance
    if hue:  # and the hue turns the way torchvision's does
        assert (out - ref).abs().mean() < 0.8 * (out - TF.adjust_hue(ref, -2 * hue)).abs().mean()


def test_hue_matrix_keeps_greys_and_turns_colours():
    assert torch.allclose(_hue_matrix(torch.zeros(1))[0], torch.eye(3), atol=1e-6)
    m = _hue_matrix(torch.tensor([0.1]))[0]
    grey = torch.tensor([0.4, 0.4, 0.4])
    assert torch.allclose(m @ grey, grey, atol=2e-3)
    red = torch.tensor([0.8, 0.2, 0.2])
    assert not torch.allclose(m @ red, red, atol=0.05)


def test_center_square_slices_or_resizes():
    wide = np.zeros((20, 30, 3), np.uint8)
    wide[:, 5:25] = 200
    square = center_square(wide, 20)
    assert square.shape == (20, 20, 3) and (square == 200).all()
    assert center_square(wide, 24).shape == (24, 24, 3)
