"""Batched augmentation of band images (issue 31, data/band_batch_augment.py): one geometry for all bands, the
RGB path's geometry; brightness and contrast per band; saturation and hue only with red, green and blue."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from plantpheno.config import AugmentConfig
from plantpheno.data.band_batch_augment import BandBatchAugment, augment_band_batch, band_extent
from plantpheno.data.bands import BandNorm
from plantpheno.data.batch_augment import BatchAugment

SEEDS = [11, 12, 13, 14, 15, 16]


def norm(names: list[str]) -> BandNorm:
    count = len(names)
    return BandNorm(tuple(names), low=(0.0,) * count, high=(65535.0,) * count,
                    mean=tuple(1000.0 + 500 * i for i in range(count)), std=tuple(200.0 + 50 * i for i in range(count)))


def copies(count: int, n: int = len(SEEDS), side: int = 40) -> torch.Tensor:
    """Standardised band images whose bands are copies of one random pattern: (n, count, side, side)."""
    one = torch.randn(n, 1, side, side, generator=torch.Generator().manual_seed(0))
    return one.expand(n, count, side, side).contiguous()


def augmenter(names: list[str], **augment) -> BandBatchAugment:
    config = AugmentConfig(**{"rotation": 30, "crop_scale": (0.5, 1.0), "hflip": 0.5, "vflip": 0.5, **augment})
    return BandBatchAugment(32, config, "crop", names, norm(names))


@pytest.mark.parametrize("resize", ["crop", "pad"])
def test_without_colour_jitter_bands_that_are_copies_stay_copies(resize):
    names = ["red", "green", "blue", "nir"]
    aug = BandBatchAugment(32, AugmentConfig(rotation=30, crop_scale=(0.5, 1.0), color_jitter=0, hue=0.1),
                           resize, ["nir", "re", "swir", "thermal"], norm(names))
    x = copies(4)
    out = augment_band_batch(aug, list(x), SEEDS, np.ones((len(SEEDS), 2)))
    assert out.shape == (len(SEEDS), 4, 32, 32) and out.dtype == torch.float32
    assert not torch.allclose(out[:, 0], torch.nn.functional.interpolate(x[:, :1], size=32)[:, 0])  # it moved
    for band in range(1, 4):
        assert torch.equal(out[:, band], out[:, 0])


def test_with_colour_jitter_each_band_is_its_own_affine_copy_of_the_same_geometry():
    """Brightness and contrast are per band: each band is a * band0 + b with its own a and b (one geometry); the
    factors differ between bands."""
    names = ["nir", "re", "swir"]
    aug = augmenter(names, color_jitter=0.4, hue=0.0)
    out = augment_band_batch(aug, list(copies(3)), SEEDS, np.ones((len(SEEDS), 2)))
    slopes = []
    for image in out:
        ref = image[0].flatten().double()
        for band in range(1, 3):
            fit = np.polyfit(ref.numpy(), image[band].flatten().double().numpy(), 1)
            residual = image[band].flatten().double() - (fit[0] * ref + fit[1])
            assert residual.abs().max() < 1e-4
            slopes.append(fit[0])
    assert np.std(slopes) > 0.05  # per band, not one factor for all


def test_saturation_and_hue_only_with_red_green_and_blue():
    x = copies(3)
    x[:, 0] += 1.0  # a colour: red above green and blue
    grey_free = augmenter(["nir", "re", "swir"], color_jitter=0.0, hue=0.3)
    with_rgb = augmenter(["red", "green", "blue"], color_jitter=0.0, hue=0.3)
    content = np.ones((len(SEEDS), 2))
    same = augment_band_batch(grey_free, list(x), SEEDS, content)
    turned = augment_band_batch(with_rgb, list(x), SEEDS, content)
    assert torch.equal(same[:, 1], same[:, 2])  # no hue: green and blue (copies) stay copies
    assert (turned[:, 1] - turned[:, 2]).abs().max() > 0.05  # the hue turn mixes red into them unequally


def test_the_geometry_is_the_rgb_paths_and_each_sample_depends_on_its_seed_only():
    """On three bands with mean 0 and std 1 (no colour), the band path moves pixels exactly as the RGB path's
    uint8 augmentation (which rounds to the nearest level); a sample's result does not depend on its batch."""
    config = AugmentConfig(rotation=25, crop_scale=(0.6, 1.0), color_jitter=0, hue=0)
    pixels = torch.randint(0, 256, (len(SEEDS), 3, 40, 40), generator=torch.Generator().manual_seed(1),
                           dtype=torch.uint8)
    rgb = BatchAugment(32, (0, 0, 0), (1, 1, 1), config, "crop")
    band = BandBatchAugment(32, config, "crop", ["a", "b", "c"],
                            BandNorm(("a", "b", "c"), (0.0,) * 3, (255.0,) * 3, (0.0,) * 3, (1.0,) * 3))
    expected = rgb.pixels(pixels, torch.from_numpy(rgb.params(SEEDS))).float()
    got = band(pixels.float(), torch.from_numpy(band.params(SEEDS)))
    assert (got - expected).abs().max() <= 0.5 + 1e-3
    alone = augment_band_batch(band, [pixels[3].float()], [SEEDS[3]], np.ones((1, 2)))
    assert torch.allclose(alone[0], got[3], atol=1e-5)


def test_the_letterbox_extent_is_that_of_the_rgb_square():
    assert band_extent(30, 60, 40, "pad") == (1.0, 0.5)
    assert band_extent(30, 60, 40, "crop") == (1.0, 1.0)


def test_a_band_loader_batch_of_band_files_that_are_copies_stays_copies(tmp_path):
    """The training loader's whole-batch path (BandDataset with ``batched``): a 16-bit four-band TIFF whose bands
    are copies, NIR in a file of its own, letterboxed (``pad``), comes out augmented, (N, C, S, S), bands equal."""
    import tifffile
    from torch.utils.data import DataLoader

    from plantpheno.config import load_config
    from plantpheno.data.band_loaders import BandDataset, band_eval_transform
    from plantpheno.data.datasets import collate

    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate([(24, 40), (32, 32), (20, 36)]):
        plane = rng.integers(0, 65535, (h, w), dtype=np.uint16)
        paths.append(tmp_path / f"leaf{i}.tif")
        tifffile.imwrite(paths[-1], np.stack([plane] * 3, axis=-1), photometric="minisblack", planarconfig="contig")
        tifffile.imwrite(tmp_path / f"leaf{i}_NIR.tif", plane, photometric="minisblack")
    config = load_config(None, {"data.root": "x", "data.resize": "pad", "data.image_size": 16,
                                "data.augment.color_jitter": 0, "data.augment.hue": 0.2,
                                "data.bands": ["red", "green", "blue", {"name": "nir", "pattern": "{stem}_NIR.tif"}]})
    names = ["red", "green", "blue", "nir"]
    band_norm = BandNorm(tuple(names), (0.0,) * 4, (65535.0,) * 4, (3e4,) * 4, (1e4,) * 4)
    aug = BandBatchAugment(16, config.data.augment, "pad", names, band_norm)
    dataset = BandDataset(paths, [0, 1, 0], band_eval_transform(16, "pad"), bands=config.data.bands,
                          norm=band_norm, regression=False, batched=aug, source_side=16)
    images, targets = next(iter(DataLoader(dataset, batch_size=3, sampler=[(0, 5), (1, 6), (2, 7)],
                                           collate_fn=collate)))
    assert images.shape == (3, 4, 16, 16) and targets.tolist() == [0, 1, 0]
    for band in range(1, 4):  # the hue turn leaves grey (equal red, green, blue) as it is
        assert torch.allclose(images[:, band], images[:, 0], atol=1e-4)
    assert not torch.equal(images[0], dataset.transform(dataset._image(0)))  # augmented, not just squared


@pytest.mark.parametrize("setting, batched", [({}, False), ({"data.augment.batched_bands": True}, True)])
def test_band_loaders_augment_batches_only_with_batched_bands(tmp_path, setting, batched):
    """``data.augment.batched`` (on by default) is for RGB; band images are batched only when asked."""
    import tifffile

    from plantpheno.config import load_config
    from plantpheno.data.band_loaders import build_band_loaders
    from plantpheno.data.prepared import PreparedData
    from plantpheno.data.sources import Sample

    paths = []
    for i in range(4):
        paths.append(tmp_path / f"leaf{i}.tif")
        tifffile.imwrite(paths[-1], np.full((20, 20, 4), 100 * i, np.uint16), photometric="minisblack",
                         planarconfig="contig")
    names = ["red", "green", "blue", "nir"]
    config = load_config(None, {"data.root": str(tmp_path), "data.bands": names, "data.image_size": 16,
                                "data.batch_size": 2, "data.num_workers": 0, **setting})
    prepared = PreparedData("classification", {"train": [Sample(p, "a" if i % 2 else "b") for i, p in
                                                         enumerate(paths)]}, ["a", "b"], "f",
                            band_norm=BandNorm(tuple(names), (0.0,) * 4, (400.0,) * 4, (150.0,) * 4, (100.0,) * 4))
    loaders = build_band_loaders(prepared, config.data, seed=0, norm=prepared.band_norm, splits=["train"])
    assert (loaders["train"].dataset.batched is not None) is batched
    images, _ = next(iter(loaders["train"]))
    assert images.shape == (2, 4, 16, 16) and images.dtype == torch.float32
