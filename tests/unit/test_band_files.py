"""One file per band (issue 31): a band read from a file of its own, named by a manifest column or a file-name
pattern next to the image; the reader, the image check, the datasets' sources and prediction inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from plantpheno.band_config import BandSpec
from plantpheno.config import load_config
from plantpheno.data.band_input import BandInput
from plantpheno.data.band_loaders import BandSquare
from plantpheno.data.bands import (BandCountError, BandError, BandNorm, check_band_file, drop_band_files, read_bands)
from plantpheno.data.sources import read_manifest
from plantpheno.errors import ConfigError, DataError

NIR = {"name": "nir", "pattern": "{stem}_NIR.tif"}


def bands(*items: str | dict, manifest: str | None = None) -> tuple[BandSpec, ...]:
    source = {"data.manifest": manifest} if manifest else {"data.root": "x"}
    spec = load_config(None, {**source, "data.bands": list(items)}).data.bands
    assert spec is not None
    return spec


def write(path: Path, pixels: np.ndarray) -> Path:
    tifffile.imwrite(path, pixels, photometric="minisblack", **({"planarconfig": "contig"} if pixels.ndim == 3 else {}))
    return path


def pair(folder: Path, stem: str = "leaf", *, nir_shape: tuple[int, int] = (12, 20), seed: int = 0) -> np.ndarray:
    """``stem.tif`` (RGB, uint16) and ``stem_NIR.tif`` (one band) in ``folder``; returns the four bands stacked."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 65535, (12, 20, 3), dtype=np.uint16)
    nir = rng.integers(0, 65535, nir_shape, dtype=np.uint16)
    write(folder / f"{stem}.tif", rgb)
    write(folder / f"{stem}_NIR.tif", nir)
    return np.concatenate([rgb, nir[:, :, None]], axis=2) if nir_shape == (12, 20) else rgb


# ---------------------------------------------------------------- config


@pytest.mark.parametrize(("band", "says"), [
    ({"name": "nir", "pattern": "NIR.tif"}, "names no part of the image file"),
    ({"name": "nir", "pattern": "{stem}_{band}.tif"}, "names {band}; expected only {stem}, {name}, {suffix}"),
    ({"name": "nir", "pattern": "{stem"}, "is not a valid pattern"),
    ({"name": "nir", "pattern": "/data/{stem}.tif"}, "is an absolute path"),
    ({"name": "nir", "pattern": "{stem}_NIR.tif", "column": "nir_path"}, "not both"),
    ({"name": "x", "difference": ["red", "green"], "column": "x_path"}, "a derived band (difference) is computed"),
    ({"name": "nir", "column": "nir_path"}, "comes from the manifest column 'nir_path', but there is no data.manifest"),
])
def test_bad_band_file_specs_are_one_config_error(band: dict, says: str) -> None:
    with pytest.raises(ConfigError, match="data.bands") as caught:
        load_config(None, {"data.root": "x", "data.bands": ["red", "green", band]})
    assert says in str(caught.value)


def test_a_band_file_reads_its_channel_0_unless_told_and_does_not_shift_the_image_channels() -> None:
    spec = bands("red", {"name": "nir", "column": "nir_path"}, "green", {**NIR, "name": "re", "channel": 1},
                 manifest="m.csv")
    assert [(b.name, b.channel, b.file_source, b.in_image) for b in spec] == [
        ("red", 0, None, True), ("nir", 0, "column", False), ("green", 1, None, True), ("re", 1, "pattern", False)]


# ---------------------------------------------------------------- reader


def test_pattern_bands_stack_with_the_image_and_keep_16_bits(tmp_path: Path) -> None:
    whole = pair(tmp_path)
    out = read_bands(tmp_path / "leaf.tif", bands("red", "green", "blue", NIR, "ndvi"))
    assert out.shape == (12, 20, 5) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, :, :4], whole.astype(np.float32))  # every 16-bit level, NIR included
    red, nir = whole[:, :, 0].astype(np.float32), whole[:, :, 3].astype(np.float32)
    np.testing.assert_allclose(out[:, :, 4], (nir - red) / (nir + red), rtol=1e-5)


def test_band_files_of_different_sizes_name_both_files_and_sizes(tmp_path: Path) -> None:
    pair(tmp_path, nir_shape=(12, 19))
    with pytest.raises(BandError) as caught:
        read_bands(tmp_path / "leaf.tif", bands("red", "green", "blue", NIR))
    message = str(caught.value)
    assert "leaf_NIR.tif: 19x12 pixels" in message and "leaf.tif: 20x12" in message and "same size" in message
    check = check_band_file(tmp_path / "leaf.tif", bands("red", "green", "blue", NIR))  # the check lists it
    assert check.problem is not None and "leaf_NIR.tif: 19x12 pixels" in check.problem


def test_a_missing_band_file_is_named_with_its_pattern(tmp_path: Path) -> None:
    pair(tmp_path)
    (tmp_path / "leaf_NIR.tif").unlink()
    with pytest.raises(BandError, match=r"the file of band 'nir' \(.*leaf_NIR.tif\) does not exist \(data.bands "
                                        r"pattern '\{stem\}_NIR.tif'\)"):
        read_bands(tmp_path / "leaf.tif", bands("red", "green", "blue", NIR))
    assert "leaf_NIR.tif" in (check_band_file(tmp_path / "leaf.tif", bands("red", NIR)).problem or "")


def test_a_band_file_without_the_channel_its_band_reads_is_a_band_count_error(tmp_path: Path) -> None:
    pair(tmp_path)
    with pytest.raises(BandCountError, match=r"leaf_NIR.tif: has 1 band\(s\); band 'nir' reads its channel 2"):
        read_bands(tmp_path / "leaf.tif", bands("red", {**NIR, "channel": 2}))


def test_the_check_hashes_the_band_files_so_a_changed_nir_file_changes_the_fingerprint(tmp_path: Path) -> None:
    pair(tmp_path)
    spec = bands("red", "green", "blue", NIR)
    before = check_band_file(tmp_path / "leaf.tif", spec).sha256
    write(tmp_path / "leaf_NIR.tif", np.zeros((12, 20), np.uint16))
    after = check_band_file(tmp_path / "leaf.tif", spec)
    assert after.problem is None and after.sha256 != before


def test_a_folders_band_files_are_not_images_of_their_own(tmp_path: Path) -> None:
    paths = [tmp_path / n for n in ("a.tif", "a_NIR.tif", "b.tif", "b_NIR.tif", "c_NIR.tif")]
    kept = drop_band_files(paths, bands("red", NIR))
    assert kept == [tmp_path / "a.tif", tmp_path / "b.tif", tmp_path / "c_NIR.tif"]  # c has no image: kept, named
    assert drop_band_files(paths, bands("red", "nir")) == paths  # one file per image: every file is an image


# ---------------------------------------------------------------- manifest columns


def test_manifest_band_columns_resolve_like_paths_and_are_required(tmp_path: Path) -> None:
    pair(tmp_path)
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label,nir_path\nleaf.tif,a,leaf_NIR.tif\n")
    [sample] = read_manifest(manifest, root=None, task="classification", band_columns=(("nir", "nir_path"),))
    assert sample.companions == (("nir", tmp_path / "leaf_NIR.tif"),)
    spec = bands("red", "green", "blue", {"name": "nir", "column": "nir_path"}, manifest=str(manifest))
    np.testing.assert_array_equal(read_bands(sample.path, spec, companions=dict(sample.companions)),
                                  read_bands(tmp_path / "leaf.tif", bands("red", "green", "blue", NIR)))
    with pytest.raises(BandError, match=r"no file for band 'nir' \(data.bands reads it from the manifest column "
                                        r"'nir_path'\)"):
        read_bands(sample.path, spec)  # no companions given
    with pytest.raises(DataError, match=r"missing column\(s\) re_path \(data.bands: re\)"):
        read_manifest(manifest, root=None, task="classification", band_columns=(("re", "re_path"),))
    manifest.write_text("path,label,nir_path\nleaf.tif,a,\n")
    with pytest.raises(DataError, match=r"line 2: empty nir_path \(the file of band nir\) for leaf.tif"):
        read_manifest(manifest, root=None, task="classification", band_columns=(("nir", "nir_path"),))


# ---------------------------------------------------------------- prediction inputs


def test_prediction_takes_a_path_with_pattern_files_or_a_dict_of_band_files(tmp_path: Path) -> None:
    pair(tmp_path)
    norm = BandNorm(("red", "nir"), (0.0, 0.0), (65535.0, 65535.0), (100.0, 200.0), (10.0, 20.0))
    by_pattern = BandInput(bands("red", NIR), norm, BandSquare(8, "crop"))
    by_column = BandInput(bands("red", {"name": "nir", "column": "nir_path"}, manifest="m.csv"), norm,
                          BandSquare(8, "crop"))
    from_path = by_pattern(tmp_path / "leaf.tif")
    from_dict = by_column({"image": tmp_path / "leaf.tif", "nir": tmp_path / "leaf_NIR.tif"})
    from_bytes = by_column({"image": (tmp_path / "leaf.tif").read_bytes(),
                            "NIR": (tmp_path / "leaf_NIR.tif").read_bytes()})
    assert from_path.shape == (2, 8, 8)
    assert torch_equal(from_path, from_dict) and torch_equal(from_path, from_bytes)
    with pytest.raises(DataError, match="band files given for thermal; this model reads files for bands nir"):
        by_column({"image": tmp_path / "leaf.tif", "thermal": tmp_path / "leaf_NIR.tif"})
    with pytest.raises(DataError, match="from a ndarray: expected the image's path"):
        by_pattern(np.zeros((8, 8, 3)))


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_predict_folders_list_arrays_for_band_models_and_skip_band_files(tmp_path: Path) -> None:
    from plantpheno.registry.predict import collect_images

    pair(tmp_path)
    np.save(tmp_path / "cube.npy", np.zeros((12, 20, 4), np.uint16))
    (tmp_path / "cube.npz").write_bytes(b"")
    norm = BandNorm(("red", "nir"), (0.0, 0.0), (1.0, 1.0), (0.0, 0.0), (1.0, 1.0))
    model = BandInput(bands("red", NIR), norm, BandSquare(8, "crop"))
    assert [p.name for p in collect_images([tmp_path], bands=model)] == ["cube.npy", "cube.npz", "leaf.tif"]
    rgb = collect_images([tmp_path])  # an RGB model: images only, as before
    assert [p.name for p in rgb] == ["leaf.tif", "leaf_NIR.tif"]


# ---------------------------------------------------------------- synth


def test_synth_per_band_writes_the_same_pixels_as_one_file(tmp_path: Path) -> None:
    from plantpheno.data.synth_bands import synthesize_multispectral

    one = synthesize_multispectral(tmp_path / "one", per_class=2, image_size=32, seed=3)
    split = synthesize_multispectral(tmp_path / "split", per_class=2, image_size=32, seed=3, layout="per-band")
    whole = tifffile.imread(one / "stressed" / "stressed_0001.tif")
    np.testing.assert_array_equal(tifffile.imread(split / "stressed" / "stressed_0001.tif"), whole[:, :, :3])
    np.testing.assert_array_equal(tifffile.imread(split / "stressed" / "stressed_0001_NIR.tif"), whole[:, :, 3])
    lines = (split / "labels.csv").read_text().splitlines()
    assert lines[0] == "path,label,nir_path"
    assert lines[1] == "healthy/healthy_0000.tif,healthy,healthy/healthy_0000_NIR.tif"
    assert not (one / "labels.csv").exists()


def test_an_image_with_too_few_channels_is_named_before_band_files_are_stacked(tmp_path: Path) -> None:
    pair(tmp_path)
    write(tmp_path / "leaf.tif", np.zeros((12, 20, 2), np.uint16))  # red, green only: blue must not read the NIR file
    with pytest.raises(BandCountError, match=r"leaf.tif: has 2 band\(s\); data.bands needs blue \(channel 2\)"):
        read_bands(tmp_path / "leaf.tif", bands("red", "green", "blue", NIR))
