"""The image check and the data doctor for ``data.bands`` (issue 31): every bad band file named in one report, and
the per-band statistics, constant-band and train/test shift findings."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tifffile

from plantpheno.config import load_config
from plantpheno.data.band_stats import measure_bands, odd_sample_types
from plantpheno.data.doctor.bands import band_findings, ks_two_sample, shift_findings
from plantpheno.data.doctor.check import BAND_SKIP, RGB_PIXEL_CHECKS, check_data
from plantpheno.data.prepared import prepare_data
from plantpheno.data.sources import Sample
from plantpheno.errors import DataError

NIR = {"name": "nir", "pattern": "{stem}_NIR.tif"}


@pytest.fixture(scope="module")
def leaves(tmp_path_factory) -> Path:
    from plantpheno.data.synth_bands import synthesize_multispectral

    return synthesize_multispectral(tmp_path_factory.mktemp("ms") / "set", per_class=15, image_size=32, seed=2,
                                    layout="per-band")


def config(root: Path, tmp: Path, **data):
    return load_config(None, {"data.root": str(root), "output_dir": str(tmp / "runs"), "data.image_size": 32,
                              "data.bands": ["red", "green", "blue", NIR], **{f"data.{k}": v for k, v in data.items()}})


def copy(leaves: Path, tmp: Path) -> Path:
    import shutil

    return Path(shutil.copytree(leaves, tmp / "data", ignore=shutil.ignore_patterns("*.csv")))


def test_the_image_check_names_every_bad_band_file_in_one_report(leaves, tmp_path) -> None:
    data = copy(leaves, tmp_path)
    folder = data / "healthy"
    tifffile.imwrite(folder / "healthy_0000.tif", np.zeros((32, 32, 2), np.uint16), photometric="minisblack",
                     planarconfig="contig")  # too few bands
    tifffile.imwrite(folder / "healthy_0001_NIR.tif", np.full((32, 32), np.nan, np.float32))  # NaN
    tifffile.imwrite(folder / "healthy_0002_NIR.tif", np.zeros((30, 32), np.uint16))  # another size
    tifffile.imwrite(folder / "healthy_0003_NIR.tif", np.zeros((32, 32), np.uint8))  # 8-bit among 16-bit
    (folder / "healthy_0004_NIR.tif").unlink()  # missing
    with pytest.raises(DataError) as caught:
        prepare_data(config(data, tmp_path))
    message = str(caught.value)
    assert message.startswith("5 of 30 image(s) cannot be used (set data.on_bad_image=skip")
    for says in ("healthy_0000.tif: has 2 band(s); data.bands needs blue (channel 2)",
                 "healthy_0001_NIR.tif: 1,024 NaN or infinite pixel value(s) in band 'nir'",
                 f"healthy_0002_NIR.tif: 32x30 pixels (width x height), but {folder / 'healthy_0002.tif'}: 32x32",
                 "healthy_0003.tif: band nir is uint8 where 25 of 26 images have uint16",
                 "the file of band 'nir' (", "healthy_0004_NIR.tif) does not exist"):
        assert says in message, says
    skipped = prepare_data(config(data, tmp_path, on_bad_image="skip"))  # the skip option leaves them out
    assert len(skipped.bad_files) == 5 and sum(len(v) for v in skipped.splits.values()) == 25


def test_sample_types_are_only_judged_against_a_clear_majority() -> None:
    pixels = np.ones((4, 4, 1), np.float32)
    one = lambda kind: measure_bands(pixels, ["nir"], {"nir": kind})  # noqa: E731
    assert odd_sample_types({Path("a"): one("uint16"), Path("b"): one("uint8")}) == {}  # 1 of 2: no majority
    odd = odd_sample_types({Path("a"): one("uint16"), Path("b"): one("uint16"), Path("c"): one("uint8")})
    assert list(odd) == [Path("c")] and "band nir is uint8 where 2 of 3 images have uint16" in odd[Path("c")]


def test_band_measures_count_saturated_and_zero_pixels_per_band() -> None:
    pixels = np.stack([np.array([[0, 65535], [65535, 7]], np.float32), np.array([[0.5, 1], [2, 3]], np.float32)], -1)
    m = measure_bands(pixels, ["nir", "ndvi"], {"nir": "uint16"})
    assert m.saturated == (0.5, 0.0) and m.zero == (0.25, 0.0) and m.dtypes == ("uint16", "")
    assert m.mean[1] == pytest.approx(1.625) and m.std[0] > 0


def test_the_doctor_reports_band_statistics_and_nothing_else_on_clean_synthetic_data(leaves, tmp_path) -> None:
    cfg = config(leaves, tmp_path)
    prepared = prepare_data(cfg)
    report = check_data(prepared, cfg.data, seed=0)
    found = {f.check: f for f in report.findings}
    assert "bands.constant" not in found and "bands.shift" not in found
    assert {"bands.statistics", "bands.constant", "bands.shift"} <= set(report.ran)
    table = found["bands.statistics"].details["splits"]
    assert set(table) == {"train", "val", "test"} and list(table["train"]) == ["red", "green", "blue", "nir"]
    assert table["train"]["nir"]["high"] > table["train"]["red"]["high"]  # leaves are bright in NIR
    assert table["train"]["nir"]["saturated"] == 0.0
    # the checks that measure 8-bit RGB pixels are not run on band files, and the report says so
    assert {c: report.skipped.get(c) for c in RGB_PIXEL_CHECKS} == {c: BAND_SKIP for c in RGB_PIXEL_CHECKS}
    assert not set(RGB_PIXEL_CHECKS) & set(report.ran)
    assert {"exact_duplicates.leak", "exact_duplicates.within_split", "conflicting_labels"} <= set(report.ran)
    assert not [f for f in report.findings if f.check != "bands.statistics"]


def test_exact_duplicates_of_band_images_are_found_by_their_band_values(leaves, tmp_path) -> None:
    """A byte copy and a re-encoded copy (zlib, planar) of an image and its NIR file are one picture; a copy whose
    NIR differs is not; a copy in the other class folder is a conflicting label."""
    data = copy(leaves, tmp_path)
    healthy, stressed = data / "healthy", data / "stressed"
    for name in ("healthy_0000.tif", "healthy_0000_NIR.tif"):
        (healthy / name.replace("healthy_0000", "copy_0000")).write_bytes((healthy / name).read_bytes())
    rgb, nir = tifffile.imread(healthy / "healthy_0001.tif"), tifffile.imread(healthy / "healthy_0001_NIR.tif")
    tifffile.imwrite(healthy / "zlib_0001.tif", np.ascontiguousarray(rgb.transpose(2, 0, 1)), compression="zlib",
                     photometric="minisblack", planarconfig="separate")
    tifffile.imwrite(healthy / "zlib_0001_NIR.tif", nir, compression="zlib", photometric="minisblack")
    tifffile.imwrite(healthy / "other_0002.tif", tifffile.imread(healthy / "healthy_0002.tif"),
                     photometric="minisblack", planarconfig="contig")  # the same red, green, blue ...
    tifffile.imwrite(healthy / "other_0002_NIR.tif", tifffile.imread(healthy / "healthy_0002_NIR.tif") // 2)  # not NIR
    for name in ("healthy_0003.tif", "healthy_0003_NIR.tif"):
        (stressed / name.replace("healthy_0003", "moved_0003")).write_bytes((healthy / name).read_bytes())
    cfg = config(data, tmp_path)
    report = check_data(prepare_data(cfg), cfg.data, seed=0)
    pairs = {frozenset(Path(p).name for p in group) for f in report.findings
             if f.check.startswith("exact_duplicates.") for group in f.files}
    assert pairs == {frozenset({"healthy_0000.tif", "copy_0000.tif"}), frozenset({"healthy_0001.tif", "zlib_0001.tif"})}
    [conflict] = [f for f in report.findings if f.check == "conflicting_labels"]
    assert {Path(p).name for p in conflict.files[0]} == {"healthy_0003.tif", "moved_0003.tif"}


def test_a_planted_constant_band_is_found_and_named(leaves, tmp_path) -> None:
    data = copy(leaves, tmp_path)
    for i in range(3):
        tifffile.imwrite(data / "stressed" / f"stressed_{i:04d}_NIR.tif", np.zeros((32, 32), np.uint16))
    cfg = config(data, tmp_path)
    report = check_data(prepare_data(cfg), cfg.data, seed=0)
    [finding] = [f for f in report.findings if f.check == "bands.constant"]
    assert finding.severity == "warning" and finding.count == 3
    assert "3 image(s) have a band that holds one value (nir in 3 (10%))" in finding.message
    assert sorted(Path(f[0]).name for f in finding.files) == [f"stressed_{i:04d}.tif" for i in range(3)]
    assert all(note[0].endswith("nir = 0") for note in finding.file_notes)


def test_the_shift_check_fires_on_a_planted_shift_and_not_on_a_random_split(leaves, tmp_path) -> None:
    prepared = prepare_data(config(leaves, tmp_path))
    stats = list(prepared.band_stats.values())
    rows = [("train" if i % 2 else "test", Sample(Path(f"{i}.tif"), "x"), m) for i, m in enumerate(stats)]
    assert shift_findings(rows) == []
    drifted = [(split, s, replace(m, mean=(*m.mean[:3], m.mean[3] * 0.7)) if split == "test" else m)
               for split, s, m in rows]
    [finding] = shift_findings(drifted)
    assert finding.check == "bands.shift" and list(finding.details["bands"]) == ["nir"]
    assert band_findings({}, {}, lambda c: True) == []  # RGB data: no band measures, no band findings


def test_ks_matches_known_values() -> None:
    same = np.arange(50.0)
    assert ks_two_sample(same, same) == (0.0, 1.0)
    distance, p = ks_two_sample(np.arange(50.0), np.arange(50.0) + 25)
    assert distance == 0.5 and 1e-6 < p < 1e-4  # scipy.stats.ks_2samp (asymptotic): 3.7e-6 exact, ~1.6e-5 asymp.


def test_rgb_configs_run_no_band_checks(tmp_path) -> None:
    from plantpheno.data.synth import synthesize_disease

    root = synthesize_disease(tmp_path / "rgb", per_class=4, image_size=32, seed=0)
    cfg = load_config(None, {"data.root": str(root), "output_dir": str(tmp_path / "runs")})
    prepared = prepare_data(cfg)
    assert prepared.band_stats == {}
    report = check_data(prepared, cfg.data, seed=0)
    assert not [c for c in [*report.ran, *report.skipped, *(f.check for f in report.findings)]
                if c.startswith("bands.")]
