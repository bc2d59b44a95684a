"""`plantpheno train --config C --data-path D --output-path O`, the training script's flags, as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_config_data_path_and_output_path_flags_train(tmp_path, disease_root, write_config):
    config = write_config(data={"root": str(tmp_path / "not-this-one")}, output_dir=str(tmp_path / "not-here"))
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "plantpheno", "train", "--config", str(config), "--data-path",
                             str(disease_root), "--output-path", str(out), "training.epochs=1"],
                            capture_output=True, text=True, timeout=600, check=False, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = Path(result.stdout.split("run directory: ")[1].strip())
    assert run_dir == out / "default" / "run" and not (tmp_path / "not-here").exists()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"
    resolved = (run_dir / "config.yaml").read_text()
    assert f"root: {disease_root}" in resolved and "manifest: null" in resolved and "epochs: 1" in resolved


def test_bad_data_path_exits_2_naming_it(tmp_path, write_config):
    config = write_config(data={"root": str(tmp_path)})
    result = subprocess.run([sys.executable, "-m", "plantpheno", "train", "--config", str(config), "--data-path",
                             str(tmp_path / "missing.csv")], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"data path {tmp_path / 'missing.csv'} does not exist" in result.stderr
