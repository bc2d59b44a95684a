"""Shared fixtures: tiny synthetic datasets, a config builder, and an isolated environment."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

# Offline and headless before anything imports timm/huggingface/matplotlib; fail fast, never download.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["MPLBACKEND"] = "Agg"

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
PLANTVILLAGE = SHARED_DATA / "plantvillage-subset"

TINY_BACKBONE = "test_resnet"  # timm's ~0.4 M parameter test model: fast on 2 CPU cores


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tool folders (caches, configs) go to a temporary HOME so tests leave nothing behind."""
    home = tmp_path_factory.mktemp("home")
    for var in ("HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "WANDB_CONFIG_DIR",
                "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "MPLCONFIGDIR"):
        monkeypatch.setenv(var, str(home))
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ISOLATED_VARS:  # where the registry, trackers and W&B mode are: each test says so itself
        monkeypatch.delenv(var, raising=False)


ISOLATED_VARS = ("PLANTPHENO_REGISTRY_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_TRACKING_URI", "WANDB_MODE")


@pytest.fixture(scope="session")
def disease_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic leaf-disease image folder: 4 classes x 16 images of 48 px."""
    from plantpheno.data.synth import synthesize_disease

    return synthesize_disease(tmp_path_factory.mktemp("synth") / "leaves", per_class=16, image_size=48, seed=1)


@pytest.fixture(scope="session")
def rosette_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic rosette leaf-count manifest: 20 plants x 3 views of 48 px."""
    from plantpheno.data.synth import synthesize_rosettes

    return synthesize_rosettes(tmp_path_factory.mktemp("synth") / "rosettes", plants=20, views_per_plant=3,
                               image_size=48, seed=2)


@pytest.fixture
def make_config(tmp_path: Path):
    """Build a validated Config for a fast CPU run; keyword sections are merged one level deep."""
    from plantpheno.config import validate_config

    def build(**sections: Any):
        return validate_config(tiny_config(tmp_path, **sections))

    return build


@pytest.fixture
def cfg(make_config, tmp_path: Path):
    """make_config with a data root filled in (the schema requires one; these tests never read it)."""

    def build(**sections):
        sections["data"] = {"root": str(tmp_path), **sections.get("data", {})}
        return make_config(**sections)

    return build


@pytest.fixture
def write_config(tmp_path: Path):
    """Write a fast-run config (see ``tiny_config``) to a YAML file and return its path."""

    def write(**sections: Any) -> Path:
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(tiny_config(tmp_path, **sections)))
        return path

    return write


def tiny_config(tmp_path: Path, **sections: Any) -> dict[str, Any]:
    """A raw config dict for a fast CPU run; ``sections`` are merged one level deep."""
    raw: dict[str, Any] = {
        "seed": 0,
        "output_dir": str(tmp_path / "runs"),
        "run_name": "run",
        "device": "cpu",
        "data": {"image_size": 32, "batch_size": 8, "num_workers": 0},
        "model": {"backbone": TINY_BACKBONE},
        "training": {"epochs": 2, "learning_rate": 0.003, "progress_bar": False},
        "evaluation": {"bootstrap_samples": 200},
    }
    raw["tracking"] = {"backends": []}  # MLflow is on by default: off unless a test is about tracking (it sets them)
    for key, value in sections.items():
        if isinstance(value, dict):
            raw.setdefault(key, {}).update(value)
        else:
            raw[key] = value
    return raw


class StopAt:
    """Trainer callback: asks the trainer to stop after a given global step, as SIGINT would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_batch_end(self, trainer, loss, images) -> None:
        if trainer.state.global_step == self.step:
            trainer.stop_requested = "SIGINT"


def stop_process_group(proc: subprocess.Popen, timeout: float = 30) -> None:
    """Stop a server started with ``start_new_session=True`` and all its workers: SIGTERM to its process
    group, SIGKILL if it has not ended after ``timeout`` seconds."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)
