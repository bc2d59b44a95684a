"""data.bands: the config, the N-band reader, per-band normalisation and the prediction input (issue 31)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from plantpheno.band_config import BandSpec
from plantpheno.config import load_config
from plantpheno.data.band_input import BandInput, example_tiff
from plantpheno.data.band_loaders import BandJitter, BandSquare
from plantpheno.data.bands import (PERCENTILES, BandCountError, BandError, BandNorm, band_meta, band_statistics,
                                   check_band_file, read_bands, read_raw)
from plantpheno.errors import ConfigError

RGBN = ["red", "green", "blue", "nir"]


def bands(*names: str | dict) -> tuple[BandSpec, ...]:
    """The validated bands of a config naming them."""
    spec = load_config(None, {"data.root": "x", "data.bands": list(names)}).data.bands
    assert spec is not None
    return spec


def cube(dtype: type = np.uint16, channels: int = 4, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    top = np.iinfo(dtype).max if np.issubdtype(dtype, np.integer) else 1.0
    return (rng.uniform(0, top, (12, 20, channels))).astype(dtype)


# ---------------------------------------------------------------- config


def test_default_is_rgb_and_shorthand_numbers_the_channels() -> None:
    assert load_config(None, {"data.root": "x"}).data.bands is None  # every existing config: the RGB path
    spec = bands("red", "green", "blue", "nir", "ndvi", {"name": "gndvi", "difference": ["nir", "green"]})
    assert [(b.name, b.channel, b.difference) for b in spec] == [
        ("red", 0, None), ("green", 1, None), ("blue", 2, None), ("nir", 3, None), ("ndvi", None, ("nir", "red")),
        ("gndvi", None, ("nir", "green"))]


@pytest.mark.parametrize(("given", "says"), [
    (["red", {"name": "x", "difference": ["nir", "red"]}], "unknown band 'nir' in difference"),
    (["red", "green", "ndvi"], "unknown band 'nir'"),
    (["red", "red"], "red appear(s) more than once"),
    ([{"name": "nir"}], "give exactly one of channel"),
    ([], "at least one band"),
])
def test_bad_band_lists_are_one_config_error(given: list, says: str) -> None:
    with pytest.raises(ConfigError, match="data.bands") as caught:
        load_config(None, {"data.root": "x", "data.bands": given})
    assert says in str(caught.value)


def test_options_that_assume_rgb_are_refused_with_bands() -> None:
    for cache in ("memory", "disk"):  # the band cache (issue 31): accepted now, as is the classify recipe
        assert load_config(None, {"data.root": "x", "data.bands": RGBN, "data.cache": cache}).data.cache == cache
    assert load_config("classify", {"data.root": "x", "data.bands": RGBN}).training.feature_cache
    with pytest.raises(ConfigError, match="data.mean/data.std do not apply"):
        load_config(None, {"data.root": "x", "data.bands": RGBN, "data.mean": [0.5, 0.5, 0.5]})


# ---------------------------------------------------------------- reader


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_interleaved_tiff_of_any_depth_reads_exactly(tmp_path: Path, dtype: type) -> None:
    pixels = cube(dtype)
    tifffile.imwrite(tmp_path / "a.tif", pixels, photometric="minisblack", planarconfig="contig")
    out = read_bands(tmp_path / "a.tif", bands(*RGBN))
    assert out.dtype == np.float32 and out.shape == (12, 20, 4)
    np.testing.assert_array_equal(out, pixels.astype(np.float32))


def test_planar_and_multi_page_tiffs_put_bands_last(tmp_path: Path) -> None:
    pixels = cube()
    planar = np.ascontiguousarray(pixels.transpose(2, 0, 1))
    tifffile.imwrite(tmp_path / "planar.tif", planar, photometric="minisblack", planarconfig="separate")
    with tifffile.TiffWriter(tmp_path / "pages.tif") as tif:
        for page in planar:
            tif.write(page)
    for name in ("planar.tif", "pages.tif"):
        np.testing.assert_array_equal(read_raw(tmp_path / name), pixels)


def test_sixteen_bit_levels_are_not_squeezed_into_eight_bits(tmp_path: Path) -> None:
    pixels = np.full((8, 8, 4), 40_000, np.uint16)
    pixels[:4] += 1  # one 16-bit level apart: 8 bits would make them equal
    tifffile.imwrite(tmp_path / "a.tif", pixels, photometric="minisblack", planarconfig="contig")
    out = read_bands(tmp_path / "a.tif", bands(*RGBN))
    assert out[0, 0, 3] - out[7, 0, 3] == 1.0


def test_npy_npz_and_bytes(tmp_path: Path) -> None:
    pixels = cube()
    np.save(tmp_path / "a.npy", pixels)
    np.savez(tmp_path / "one.npz", whatever=pixels)
    np.savez(tmp_path / "named.npz", image=pixels, mask=pixels[:, :, 0])
    np.savez(tmp_path / "two.npz", a=pixels, b=pixels)
    for name in ("a.npy", "one.npz", "named.npz"):
        np.testing.assert_array_equal(read_raw(tmp_path / name), pixels)
    np.testing.assert_array_equal(read_raw((tmp_path / "a.npy").read_bytes()), pixels)
    with pytest.raises(BandError, match="holds arrays a, b; expected one array, or one named 'image'"):
        read_raw(tmp_path / "two.npz")


def test_false_colour_png_takes_channels_by_index(tmp_path: Path) -> None:
    cir = cube(np.uint8, 3)  # a colour-infrared camera: NIR, red, green in R, G, B
    Image.fromarray(cir).save(tmp_path / "cir.png")
    spec = bands({"name": "green", "channel": 2}, {"name": "red", "channel": 1}, {"name": "nir", "channel": 0})
    out = read_bands(tmp_path / "cir.png", spec)
    np.testing.assert_array_equal(out, cir[:, :, [2, 1, 0]].astype(np.float32))


def test_ndvi_and_normalised_differences(tmp_path: Path) -> None:
    pixels = np.zeros((2, 2, 4), np.uint16)
    pixels[..., 0], pixels[..., 1], pixels[..., 3] = 1000, 3000, 9000  # red, green, nir
    pixels[1, 1] = 0  # nir + red = 0: defined as 0, not NaN
    np.save(tmp_path / "a.npy", pixels)
    spec = bands(*RGBN, "ndvi", {"name": "gndvi", "difference": ["nir", "green"]})
    out = read_bands(tmp_path / "a.npy", spec)
    assert out[0, 0, 4] == pytest.approx((9000 - 1000) / (9000 + 1000))
    assert out[0, 0, 5] == pytest.approx((9000 - 3000) / (9000 + 3000))
    assert out[1, 1, 4] == 0 and np.isfinite(out).all()


def test_too_few_bands_names_the_file_and_the_band(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "rgb.tif", cube(np.uint16, 3), photometric="minisblack", planarconfig="contig")
    with pytest.raises(BandCountError, match=r"rgb.tif: has 3 band\(s\); data.bands needs nir \(channel 3\)"):
        read_bands(tmp_path / "rgb.tif", bands(*RGBN))
    check = check_band_file(tmp_path / "rgb.tif", bands(*RGBN))  # the check pass lists it instead
    assert check.sha256 and check.problem and "needs nir (channel 3)" in check.problem


def test_nan_in_a_float_tiff_is_refused(tmp_path: Path) -> None:
    pixels = cube(np.float32)
    pixels[3, 4, 1] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", pixels, photometric="minisblack", planarconfig="contig")
    with pytest.raises(BandError, match="nan.tif: 1 NaN or infinite pixel value"):
        read_bands(tmp_path / "nan.tif", bands(*RGBN))
    assert "NaN" in (check_band_file(tmp_path / "nan.tif", bands(*RGBN)).problem or "")


def test_not_an_image(tmp_path: Path) -> None:
    (tmp_path / "x.tif").write_bytes(b"hello, not a TIFF")
    assert check_band_file(tmp_path / "x.tif", bands(*RGBN)).problem


# ---------------------------------------------------------------- normalisation


def test_statistics_clip_outliers_and_standardise(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    paths = []
    for i in range(6):
        pixels = rng.normal(20_000, 1000, (32, 32, 4)).clip(0, 65535).astype(np.uint16)
        pixels[..., 3] = rng.normal(40_000, 3000, (32, 32)).astype(np.uint16)
        pixels[0, :8, 3] = 65535  # saturated pixels: clipped, so they do not stretch the scale
        np.save(tmp_path / f"{i}.npy", pixels)
        paths.append(tmp_path / f"{i}.npy")
    norm = band_statistics(paths, bands(*RGBN), seed=0)
    assert norm == band_statistics(list(reversed(paths)), bands(*RGBN), seed=0)  # order-independent, repeatable
    assert norm.mean[0] == pytest.approx(20_000, rel=0.01) and norm.mean[3] == pytest.approx(40_000, rel=0.01)
    assert norm.std[3] == pytest.approx(3000 * 0.9, rel=0.15)  # the saturated pixels left out (clipped)
    assert norm.high[3] < 65535
    standard = norm.apply(read_bands(paths[0], bands(*RGBN)))
    assert np.abs(standard.mean(axis=(0, 1))).max() < 0.2
    assert BandNorm.from_json(norm.to_json()) == norm and norm.to_json()["percentiles"] == list(PERCENTILES)


def test_band_meta_is_absent_for_rgb_and_round_trips_for_bands() -> None:
    from plantpheno.records.model_meta import ModelMeta

    assert band_meta(None, None, None) is None
    norm = BandNorm(("red", "nir"), (0, 0), (1, 1), (0.5, 0.6), (0.1, 0.2))
    rgb = ModelMeta(task="classification", num_outputs=2, class_names=["a", "b"], backbone="test_resnet",
                    image_size=16, mean=(0.5,) * 3, std=(0.2,) * 3)
    meta = rgb.model_copy(update={"bands": band_meta(bands("red", "nir"), norm, "model.input_adapter=mean: ...")})
    meta = ModelMeta.model_validate(meta.to_dict())  # the block as a checkpoint stores it, read back
    assert meta.band_names == ["red", "nir"]
    made = BandInput.of(meta)
    assert made is not None and made.norm == norm and [b.name for b in made.bands] == ["red", "nir"]
    assert BandInput.of(rgb) is None
    assert read_raw(example_tiff(meta)).shape == (32, 32, 2)


def test_prediction_input_scales_and_squares_any_kind_of_image(tmp_path: Path) -> None:
    spec = bands(*RGBN)
    norm = BandNorm(tuple(RGBN), (0,) * 4, (65535,) * 4, (30000,) * 4, (1000,) * 4)
    made = BandInput(spec, norm, BandSquare(8, "crop"))
    pixels = np.full((10, 16, 4), 31000, np.uint16)
    buf = io.BytesIO()
    tifffile.imwrite(buf, pixels, photometric="minisblack", planarconfig="contig")
    for item in (pixels, buf.getvalue()):
        out = made(item)
        assert out.shape == (4, 8, 8) and torch.allclose(out, torch.ones(4, 8, 8))
    with pytest.raises(BandCountError, match="this model was trained on bands red, green, blue, nir"):
        made(np.zeros((10, 16, 3), np.uint8))


# ---------------------------------------------------------------- transforms


@pytest.mark.parametrize(("resize", "shape"), [("crop", (3, 8, 8)), ("pad", (3, 8, 8)), ("stretch", (3, 8, 8))])
def test_band_square(resize: str, shape: tuple[int, ...]) -> None:
    image = torch.ones(3, 10, 20)
    out = BandSquare(8, resize)(image)
    assert out.shape == shape
    if resize == "pad":  # letterboxed with 0, the standardised mean
        assert out[:, 0].abs().max() == 0 and out[:, 4].min() > 0.9


def test_saturation_only_with_red_green_and_blue() -> None:
    norm = BandNorm(("nir", "red_edge"), (0, 0), (1, 1), (0, 0), (1, 1))
    assert BandJitter(["nir", "red_edge"], norm, 0.2).rgb is None
    norm4 = BandNorm(tuple(RGBN), (0,) * 4, (1,) * 4, (0,) * 4, (1,) * 4)
    assert BandJitter(["nir", "blue", "green", "red"], norm4, 0.2).rgb == [3, 2, 1]  # by name, not position
    torch.manual_seed(0)
    out = BandJitter(RGBN, norm4, 0.2)(torch.randn(4, 6, 6))
    assert out.shape == (4, 6, 6) and torch.isfinite(out).all()


# ---------------------------------------------------------------- synthetic set


def test_synthetic_stress_shows_in_nir_only(tmp_path: Path) -> None:
    from plantpheno.data.synth_bands import render_leaf

    def leaf_means(stressed: bool) -> np.ndarray:
        means = []
        for i in range(40):
            pixels = render_leaf(np.random.default_rng([7, int(stressed), i]), 48, stressed=stressed).astype(float)
            leaf = pixels[..., 1] > 1.5 * pixels[..., 0]  # green above red: the leaf, not the soil
            means.append(pixels[leaf].mean(axis=0))
        return np.array(means)

    healthy, stressed = leaf_means(False), leaf_means(True)
    gap = (healthy.mean(axis=0) - stressed.mean(axis=0)) / healthy.std(axis=0)
    assert np.abs(gap[:3]).max() < 0.5  # red, green, blue: one distribution for both classes
    assert gap[3] > 0.5  # NIR: lower where the leaf is stressed
    assert render_leaf(np.random.default_rng(0), 48, stressed=True).dtype == np.uint16


def test_synthetic_stress_trait_is_the_share_of_the_leaf_whose_nir_dropped(tmp_path: Path) -> None:
    """stress.csv (path,value[,nir_path]): 0 for a healthy leaf; for a stressed one the share (%) of the leaf whose NIR
    dropped, as measured from the pixels; the same values in both layouts."""
    import csv

    import tifffile

    from plantpheno.data.synth_bands import synthesize_multispectral

    one = synthesize_multispectral(tmp_path / "one", per_class=12, image_size=48, seed=1)
    split = synthesize_multispectral(tmp_path / "split", per_class=12, image_size=48, seed=1, layout="per-band")
    rows = list(csv.DictReader((one / "stress.csv").open()))
    values = {r["path"]: float(r["value"]) for r in rows}
    assert len(values) == 24 and all(v == 0 for p, v in values.items() if p.startswith("healthy/"))
    stressed = {p: v for p, v in values.items() if p.startswith("stressed/")}
    assert all(5 < v < 80 for v in stressed.values())
    measured = []
    for path in stressed:
        pixels = tifffile.imread(one / path).astype(float)
        leaf = pixels[pixels[..., 1] > 1.5 * pixels[..., 0]]  # green above red: the leaf, not the soil
        ratio = leaf[:, 3] / leaf[:, 1]  # NIR over green: the leaf's shading cancels, a drop in NIR does not
        measured.append(100 * np.mean(ratio < 0.75 * np.median(ratio)))
    assert np.corrcoef(list(stressed.values()), measured)[0, 1] > 0.9
    per_band = list(csv.DictReader((split / "stress.csv").open()))
    assert [(r["path"], float(r["value"])) for r in per_band] == list(values.items())
    assert all(r["nir_path"] == r["path"].replace(".tif", "_NIR.tif") for r in per_band)


def test_synth_cli_writes_four_band_tiffs(tmp_path: Path) -> None:
    from plantpheno.cli import main

    assert main(["data", "synth", str(tmp_path / "ms"), "--kind", "multispectral", "--per-class", "2",
                 "--image-size", "32"]) == 0
    files = sorted((tmp_path / "ms").rglob("*.tif"))
    assert [f.parent.name for f in files] == ["healthy"] * 2 + ["stressed"] * 2
    pixels = read_raw(files[0])
    assert pixels.shape == (32, 32, 4) and pixels.dtype == np.uint16
