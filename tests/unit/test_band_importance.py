"""Band importance: the drop of the validation headline per band replaced by its training mean (issue 31)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from plantpheno.config import validate_config
from plantpheno.data.datasets import Loaders
from plantpheno.evaluation.band_importance import importance, per_image_scores, write_band_importance
from plantpheno.reporting import RecordingReporter
from plantpheno.run.folder import RunDir
from plantpheno.training.objectives import Classification, Regression
from conftest import tiny_config

NAMES = ["red", "green", "blue", "nir"]


class OneBand(nn.Module):
    """A classifier that looks at one band only: class 1 when its mean is below 0."""

    def __init__(self, band: int) -> None:
        super().__init__()
        self.band = band

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        level = x[:, self.band].mean(dim=(1, 2))
        return torch.stack([level, -level], dim=1) * 10


def val_set(band: int, n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardised images in which ``band`` is +-1 by class and the other bands are noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, len(NAMES), 8, 8, generator=g) * 0.3
    x[:, band] += torch.where(y == 1, -1.0, 1.0).view(-1, 1, 1)
    return x, y


def loaders(x: torch.Tensor, y: torch.Tensor) -> Loaders:
    return Loaders({"val": DataLoader(TensorDataset(x, y), batch_size=16)})


def test_the_one_band_a_model_uses_ranks_first_with_an_interval_and_the_others_drop_nothing() -> None:
    x, y = val_set(band=3)
    base, ablated = per_image_scores(OneBand(3), loaders(x, y)["val"], task=Classification(["a", "b"]), bands=4,
                                     device=torch.device("cpu"), finish=Loaders({}).finish)
    assert base.shape == (64,) and ablated.shape == (64, 4) and base.mean() == 1.0
    record = importance(base, ablated, NAMES, task="classification", n_resamples=300, confidence=0.95, seed=0)
    ranked = [r["band"] for r in record["bands"]]
    assert ranked[0] == "nir" and record["bands"][0]["rank"] == 1
    nir = record["bands"][0]
    assert nir["value"] == pytest.approx(0.5)  # every prediction becomes class 0 without its band: half right
    assert nir["drop"]["estimate"] == pytest.approx(0.5)
    assert 0.3 < nir["drop"]["low"] <= 0.5 <= nir["drop"]["high"] < 0.7  # a paired bootstrap interval
    for other in record["bands"][1:]:
        assert other["drop"]["estimate"] == 0 and other["drop"]["low"] == other["drop"]["high"] == 0
    assert record["baseline"]["estimate"] == 1.0 and record["split"] == "val" and record["metric"] == "accuracy"


def test_the_ranking_follows_the_band_the_model_uses() -> None:
    x, y = val_set(band=1)
    base, ablated = per_image_scores(OneBand(1), loaders(x, y)["val"], task=Classification(["a", "b"]), bands=4,
                                     device=torch.device("cpu"), finish=Loaders({}).finish)
    record = importance(base, ablated, NAMES, task="classification", n_resamples=100, confidence=0.9, seed=1)
    assert record["bands"][0]["band"] == "green"


def test_for_a_trait_a_larger_error_is_a_positive_drop() -> None:
    base = np.array([0.1, 0.2, 0.3, 0.2])  # absolute errors with every band
    ablated = np.stack([base + 1.0, base], axis=1)  # band 0 replaced: errors grow by 1
    record = importance(base, ablated, ["nir", "red"], task="regression", n_resamples=50, confidence=0.95, seed=0)
    assert record["metric"] == "mae" and record["direction"] == "min"
    assert record["bands"][0]["band"] == "nir" and record["bands"][0]["drop"]["estimate"] == pytest.approx(1.0)
    assert record["bands"][0]["value"] == pytest.approx(1.2)


def test_without_bootstrap_resamples_the_intervals_say_so() -> None:
    record = importance(np.ones(4), np.zeros((4, 1)), ["nir"], task="classification", n_resamples=0,
                        confidence=0.95, seed=0)
    assert record["bands"][0]["drop"]["low"] is None and "bootstrap_samples = 0" in record["bands"][0]["drop"]["method"]


def test_a_band_run_writes_the_file_and_an_rgb_run_writes_nothing(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    x, y = val_set(band=3, n=32)
    common = {"run": run, "task": Classification(["a", "b"]), "device": torch.device("cpu"),
              "reporter": RecordingReporter(), "checkpoint_epoch": 2}
    rgb = validate_config(tiny_config(tmp_path, data={"root": str(tmp_path)}))
    assert write_band_importance(OneBand(0), loaders(x[:, :3], y), bands=rgb.data.bands, evaluation=rgb.evaluation,
                                 seed=0, **common) is None
    assert not run.band_importance.exists()
    bands = validate_config(tiny_config(tmp_path, data={"root": str(tmp_path), "bands": NAMES}))
    record = write_band_importance(OneBand(3), loaders(x, y), bands=bands.data.bands, evaluation=bands.evaluation,
                                   seed=0, **common)
    assert record is not None and json.loads(run.band_importance.read_text()) == record
    assert record["bands"][0]["band"] == "nir" and record["checkpoint_epoch"] == 2
    assert record["bands"][0]["drop"]["n_resamples"] == 200  # the config's evaluation.bootstrap_samples


def test_a_regression_model_uses_its_trait_units(tmp_path: Path) -> None:
    task = Regression(10.0, 2.0)
    x = torch.zeros(8, 2, 4, 4)
    x[:, 0] = 1.0
    y = torch.full((8,), 12.0)  # standardised output 1 -> 12 in the trait's units

    class Mean0(nn.Module):
        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return images[:, 0].mean(dim=(1, 2))[:, None]

    base, ablated = per_image_scores(Mean0(), DataLoader(TensorDataset(x, y), batch_size=4), task=task, bands=2,
                                     device=torch.device("cpu"), finish=Loaders({}).finish)
    assert base == pytest.approx(np.zeros(8)) and ablated[:, 0] == pytest.approx(np.full(8, 2.0))
