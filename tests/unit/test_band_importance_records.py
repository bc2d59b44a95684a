"""Band importance beyond the run folder (issue 31): logged to the trackers (the real MLflow on sqlite) as metrics
and an artifact, and copied with its checksum into model packages, where the Python API reads it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from plantpheno.config import validate_config
from plantpheno.evaluation.band_importance import importance
from plantpheno.evaluation.report import write_evaluation
from plantpheno.run.folder import RunDir
from plantpheno.tracking.lifecycle import log_run_results
from plantpheno.tracking.session import build_trackers
from conftest import tiny_config


def _band_run(tmp_path: Path) -> tuple[RunDir, dict]:
    """A run folder with a test evaluation and the band importance of a model that relies on NIR only."""
    run = RunDir(tmp_path / "runs" / "default" / "run")
    y = np.array([0, 1, 1, 0] * 5)
    probs = np.eye(2, dtype=np.float32)[y]
    evaluation = write_evaluation(run.eval("test"), targets=y, outputs=probs,
                                  paths=[Path(f"/x/{i}.tif") for i in range(len(y))], class_names=["a", "b"],
                                  bootstrap_samples=50, confidence=0.95, seed=0, extra={"split": "test"})
    base = np.ones(20)
    ablated = np.stack([np.ones(20), np.arange(20) % 2], axis=1)  # without nir, half right
    record = importance(base, ablated, ["red", "nir"], task="classification", n_resamples=100, confidence=0.95,
                        seed=0)
    run.band_importance.write_text(json.dumps(record))
    return run, evaluation.to_dict()


def test_the_trackers_get_each_band_drop_with_its_interval_and_the_file(tmp_path):
    from mlflow import MlflowClient

    run, metrics = _band_run(tmp_path)
    config = validate_config(tiny_config(tmp_path, data={"root": str(tmp_path)}, tracking={"backends": ["mlflow"]}))
    trackers = build_trackers(config, run)
    ids = trackers.start(run_name="run")
    log_run_results(trackers, run, metrics, split="test", step=2, log_checkpoint=False)
    trackers.finish("completed")
    client = MlflowClient(tracking_uri=f"sqlite:///{(tmp_path / 'runs' / 'mlflow.db').resolve()}")
    logged = client.get_run(ids["mlflow"]).data.metrics
    assert logged["val_band_drop/nir"] == pytest.approx(0.5) and logged["val_band_rank/nir"] == 1
    assert logged["val_band_drop/nir_low"] < 0.5 < logged["val_band_drop/nir_high"]
    assert logged["val_band_drop/red"] == 0 and logged["val_band_rank/red"] == 2
    assert logged["val_band_baseline"] == 1.0 and "test/accuracy" in logged
    artifacts = [a.path for a in client.list_artifacts(ids["mlflow"], "run")]
    assert "run/band_importance.json" in artifacts


def test_an_rgb_run_logs_no_band_figures(tmp_path):
    from plantpheno.tracking.lifecycle import band_importance_figures

    run, _ = _band_run(tmp_path)
    assert band_importance_figures(run)
    run.band_importance.unlink()
    assert band_importance_figures(run) == {}
