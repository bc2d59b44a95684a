"""``data.cache`` and ``training.feature_cache`` with ``data.bands`` (issue 31): keyed by the band set, exact
(16-bit values kept), and the same tensors as the uncached path."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from plantpheno.config import load_config
from plantpheno.data.band_cache import band_cache_key, build_band_cache
from plantpheno.data.band_loaders import BandDataset, band_eval_transform
from plantpheno.data.bands import BandNorm, read_bands

NIR = {"name": "nir", "pattern": "{stem}_NIR.tif"}


def bands(*items):
    return load_config(None, {"data.root": "x", "data.bands": list(items)}).data.bands


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate([(12, 20), (16, 16), (9, 30)]):
        rgb = rng.integers(0, 65536, (h, w, 3), dtype=np.uint16)
        rgb[0, 0] = 65535  # the top level survives
        tifffile.imwrite(tmp_path / f"im{i}.tif", rgb, photometric="minisblack", planarconfig="contig")
        tifffile.imwrite(tmp_path / f"im{i}_NIR.tif", rng.integers(0, 65536, (h, w), dtype=np.uint16),
                         photometric="minisblack")
        paths.append(tmp_path / f"im{i}.tif")
    return paths


def test_the_cache_key_changes_with_the_bands_files_and_contents(images) -> None:
    rgbn = bands("red", "green", "blue", NIR)
    none = [{} for _ in images]
    key = band_cache_key(images, none, rgbn, "f")
    assert key == band_cache_key(images, none, bands("red", "green", "blue", NIR), "f")  # deterministic
    others = [band_cache_key(images, none, bands("red", "green", "blue"), "f"),  # another band set
              band_cache_key(images, none, bands("green", "red", "blue", NIR), "f"),  # another channel order
              band_cache_key(images, none, bands("red", "green", "blue", {**NIR, "pattern": "{stem}_N.tif"}), "f"),
              band_cache_key(images, none, bands("red", "green", "blue", NIR, "ndvi"), "f"),  # a derived band
              band_cache_key(images, none, rgbn, "g"),  # changed file contents
              band_cache_key(images, [{"nir": Path("x.tif")}, {}, {}], rgbn, "f")]  # another band file
    assert len({key, *others}) == 1 + len(others)


@pytest.mark.parametrize("mode", ["memory", "disk"])
def test_the_band_cache_holds_the_file_values_exactly(images, tmp_path, mode) -> None:
    spec = bands("red", "green", "blue", NIR, "ndvi")
    none = [{} for _ in images]
    cache = build_band_cache(images, none, spec, mode=mode, fingerprint="f", directory=tmp_path / "cache")
    for i, path in enumerate(images):
        np.testing.assert_array_equal(cache.array(i), read_bands(path, spec))
    assert cache.array(0)[0, 0, 0] == 65535.0  # 16-bit: every level kept (float32 holds them exactly)
    if mode == "disk":
        again = build_band_cache(images, none, spec, mode=mode, fingerprint="f", directory=tmp_path / "cache")
        assert again.path == cache.path and len(list((tmp_path / "cache").iterdir())) == 2  # reused, not rewritten
        copied = pickle.loads(pickle.dumps(again))  # a spawned worker gets the path and maps it itself
        assert copied._pixels is None and np.array_equal(copied.array(2), cache.array(2))
        other = build_band_cache(images, none, spec[:4], mode=mode, fingerprint="f", directory=tmp_path / "cache")
        assert other.path != cache.path  # another band set: another cache


def test_a_cached_band_dataset_gives_the_same_tensors(images) -> None:
    spec = bands("red", "green", "blue", NIR)
    norm = BandNorm(("red", "green", "blue", "nir"), (1e3,) * 4, (6e4,) * 4, (3e4,) * 4, (1e4,) * 4)
    cache = build_band_cache(images, [{} for _ in images], spec, mode="memory", fingerprint="f")
    plain = BandDataset(images, [0, 1, 0], band_eval_transform(8, "pad"), bands=spec, norm=norm, regression=False)
    cached = BandDataset(images, [0, 1, 0], band_eval_transform(8, "pad"), bands=spec, norm=norm, regression=False,
                         cache=cache)
    for i in range(len(images)):
        assert torch.equal(plain[(i, 0)][0], cached[(i, 0)][0])


def test_the_feature_store_key_names_the_bands_and_their_scaling() -> None:
    from plantpheno.data.prepared import PreparedData
    from plantpheno.training.feature_store import FeatureStore
    from plantpheno.training.phases import FrozenFeatures

    def key(band_list, norm):
        config = load_config(None, {"data.root": "x", "data.bands": band_list, "model.freeze_backbone": True,
                                    "model.pretrained": True, "training.feature_cache": True})
        prepared = PreparedData("classification", {}, ["a", "b"], "f", band_norm=norm)
        return FrozenFeatures(None, prepared, None, config, mean=(0.5,) * 3, std=(0.2,) * 3,  # type: ignore[arg-type]
                              device=torch.device("cpu"), reporter=None, store=FeatureStore())._store_key("pooled")

    norm = BandNorm(("red", "nir"), (0.0, 0.0), (1.0, 1.0), (0.5, 0.5), (0.1, 0.1))
    base = key(["red", "nir"], norm)
    assert base != key(["red", {"name": "nir", "channel": 2}], norm)
    assert base != key(["red", "nir"], BandNorm(("red", "nir"), (0.0, 0.0), (1.0, 1.0), (0.5, 0.6), (0.1, 0.1)))
    assert base == key(["red", "nir"], norm)
    rgb = load_config(None, {"data.root": "x", "model.freeze_backbone": True, "model.pretrained": True,
                           "training.feature_cache": True})
    plain = FrozenFeatures(None, PreparedData("classification", {}, ["a", "b"], "f"), None,  # type: ignore[arg-type]
                           rgb, mean=(0.5,) * 3, std=(0.2,) * 3, device=torch.device("cpu"), reporter=None,
                           store=FeatureStore())._store_key("pooled")
    assert plain is not None and len(plain) == 10  # RGB: the key as it was (+ init_from, model.bn_stats)
