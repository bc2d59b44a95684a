"""The report's view of band images: which colour composite, stretched how; the card and the bands section."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from plantpheno.config import load_config
from plantpheno.data.bands import BandNorm, band_meta
from plantpheno.evaluation.band_importance import importance
from plantpheno.evaluation.band_view import BandView, composite_choice
from plantpheno.evaluation.card_text import input_text
from plantpheno.evaluation.report_bands import bands_section
from plantpheno.records.model_meta import ModelMeta

RGB_META = ModelMeta(task="classification", num_outputs=2, class_names=["a", "b"], backbone="test_resnet",
                     image_size=16, mean=(0.5,) * 3, std=(0.2,) * 3)


def meta_of(names: list[str], norm: BandNorm) -> ModelMeta:
    spec = load_config(None, {"data.root": "x", "data.bands": names}).data.bands
    return ModelMeta.model_validate({**RGB_META.to_dict(), "bands": band_meta(spec, norm, "mean")})


@pytest.mark.parametrize(("names", "shown", "words"), [
    (["red", "green", "blue", "nir"], (0, 1, 2), "RGB composite of the red, green and blue"),
    (["nir", "blue", "green", "red"], (3, 2, 1), "RGB composite"),  # matched by name, not position
    (["nir", "red", "green", "red_edge"], (0, 1, 2), "false-colour composite of the first 3 bands, R = nir, G = red, "
                                                     "B = green"),
    (["nir", "red"], (0, 1, 0), "R = nir, G = red, B = nir"),
    (["thermal"], (0, 0, 0), "thermal band in grey"),
])
def test_the_composite_is_rgb_when_present_else_the_first_three_bands(names, shown, words) -> None:
    channels, text = composite_choice(names)
    assert channels == shown and words in text and "1st to 99th percentile" in text


def test_each_shown_band_is_stretched_from_its_training_low_to_high(tmp_path: Path) -> None:
    names = ["nir", "red", "green"]
    norm = BandNorm(tuple(names), (1000.0, 0.0, 0.0), (5000.0, 100.0, 10.0), (3000.0, 50.0, 5.0), (500.0, 20.0, 2.0))
    view = BandView.of(meta_of(names, norm))
    assert view is not None and BandView.of(RGB_META) is None
    pixels = np.empty((8, 8, 3), np.uint16)
    pixels[..., 0], pixels[..., 1], pixels[..., 2] = 1000, 100, 7  # nir at its low, red at its high, green 70 %
    path = tmp_path / "leaf.tif"
    tifffile.imwrite(path, pixels, photometric="minisblack", planarconfig="contig")
    loaded = view.load(path)
    assert not isinstance(loaded, str)
    picture, tensor = loaded
    assert tensor.shape == (3, 16, 16) and picture.shape == (16, 16, 3) and picture.dtype == np.uint8
    assert picture[0, 0].tolist() == [0, 255, 179]  # (7 - 0) / (10 - 0) * 255 = 178.5, rounded
    assert tensor[0, 0, 0].item() == pytest.approx((1000 - 3000) / 500)
    assert isinstance(view.load(tmp_path / "gone.tif"), str)  # shown as a missing tile, not raised


def test_the_card_names_the_bands_and_rgb_cards_are_unchanged() -> None:
    norm = BandNorm(("red", "nir"), (0, 0), (1, 1), (0.5, 0.6), (0.1, 0.2))
    assert input_text(meta_of(["red", "nir"], norm)).startswith("bands red, nir (data.bands;")
    assert input_text(RGB_META).startswith("RGB, resized (shorter side) to 16 px")


def test_the_bands_section_ranks_the_bands_and_names_the_composite() -> None:
    names = ["red", "green", "blue", "nir"]
    view = BandView.of(meta_of(names, BandNorm(tuple(names), (0,) * 4, (1,) * 4, (0.5,) * 4, (0.2,) * 4)))
    base = np.ones(20)
    ablated = np.ones((20, 4))
    ablated[:10, 3] = 0  # nir replaced: half the images go wrong
    record = importance(base, ablated, names, task="classification", n_resamples=100, confidence=0.95, seed=0)
    html = bands_section(record, view)
    assert 'id="bands"' in html and "RGB composite" in html and "accuracy with every band: 1.0000" in html
    assert html.index("<td>nir</td>") < html.index("<td>red</td>") and "+0.5000" in html
    assert "No band importance" in bands_section(None, view) and bands_section(record, None) == ""
    assert torch.is_tensor(view.input(np.zeros((8, 8, 4), np.float32)))


def test_the_bands_section_of_a_trait_model_gives_the_rise_in_mae_in_its_units() -> None:
    """A regression headline: the MAE rises without a band; the MAE is no signed difference, and the MAE without a
    band is shown as precisely as the drop (15.9 for 15.8849 and 15.9046 hid a drop of +0.0197)."""
    names = ["red", "nir"]
    view = BandView.of(meta_of(names, BandNorm(tuple(names), (0,) * 2, (1,) * 2, (0.5,) * 2, (0.2,) * 2)))
    base = np.full(10, 15.8849)  # absolute errors with every band
    ablated = np.stack([base + 0.0197, base - 0.003], axis=1)
    record = importance(base, ablated, names, task="regression", n_resamples=100, confidence=0.95, seed=0)
    html = bands_section(record, view)
    assert "How much the mae on the val split (10 images) rises" in html
    assert "mae with every band: 15.8849 (95% CI 15.8849 to 15.8849, 100 resamples)" in html
    assert "<td>red</td><td>15.9046</td><td>+0.0197</td>" in html and "<td>nir</td><td>15.8819</td><td>-0.0030</td>" in html


def test_a_band_named_in_a_manifest_column_is_read_from_the_runs_split_csv(tmp_path: Path) -> None:
    """The report's images are listed by path only; a band whose file a manifest column names comes from split.csv
    (without it every tile of such a run was 'no file for band')."""
    names = ["red", "green", "nir"]
    spec = load_config(None, {"data.manifest": "m.csv", "data.bands": [
        {"name": "red", "channel": 0}, {"name": "green", "channel": 1},
        {"name": "nir", "column": "nir_path"}]}).data.bands
    norm = BandNorm(tuple(names), (0.0,) * 3, (255.0,) * 3, (100.0,) * 3, (50.0,) * 3)
    meta = ModelMeta.model_validate({**RGB_META.to_dict(), "bands": band_meta(spec, norm, "mean")})
    image, nir = tmp_path / "leaf.tif", tmp_path / "leaf_nir.tif"
    tifffile.imwrite(image, np.full((8, 8, 2), 10, np.uint8), photometric="minisblack", planarconfig="contig")
    tifffile.imwrite(nir, np.full((8, 8), 200, np.uint8))
    split = tmp_path / "split.csv"
    split.write_text(f"path,label,split,group,nir_path\n{image},a,test,,{nir}\n")
    without = BandView.of(meta)
    assert without is not None and isinstance(without.load(image), str)  # the path alone names no NIR file
    view = BandView.of(meta, split)
    loaded = view.load(image) if view is not None else "no view"
    assert not isinstance(loaded, str)
    assert loaded[1][2, 0, 0].item() == pytest.approx((200 - 100) / 50)
