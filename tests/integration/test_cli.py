"""The command line as a user runs it: subprocesses, exit codes, messages, signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml


def plantpheno(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "plantpheno", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_help_lists_commands_quickly():
    start = time.perf_counter()
    result = plantpheno("--help")
    assert result.returncode == 0
    for command in ("train", "evaluate", "data", "config"):
        assert command in result.stdout
    assert time.perf_counter() - start < 30  # generous: only guards against importing torch at start-up
    assert "import torch" not in result.stderr


def test_bad_config_exits_2_with_one_message_per_field_and_no_traceback(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data: {root: x, image_size: tiny}\ntraining: {epochs: -1}\nwhatever: 1\n")
    result = plantpheno("train", str(path), "data.batch_size=0")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    for fragment in ("data.image_size: got 'tiny'", "training.epochs: got -1", "data.batch_size: got 0",
                     "whatever: unknown field"):
        assert fragment in result.stderr


def test_missing_data_folder_and_resume_misuse_exit_2(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(f"data: {{root: {tmp_path / 'nowhere'}}}\nmodel: {{backbone: test_resnet}}\n")
    result = plantpheno("train", str(path), "device=cpu", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"data.root {tmp_path / 'nowhere'} is not a folder" in result.stderr
    assert not (tmp_path / "runs").exists(), "a failed start must not leave a run folder behind"
    result = plantpheno("train", str(path), "--resume", str(tmp_path))
    assert result.returncode == 2 and "takes no config or overrides" in result.stderr
    result = plantpheno("evaluate", str(tmp_path))
    assert result.returncode == 2 and "is not a plantpheno run directory" in result.stderr


def test_synth_train_evaluate_from_the_command_line(tmp_path, write_config):
    leaves = tmp_path / "leaves"
    result = plantpheno("data", "synth", str(leaves), "--per-class", "12", "--image-size", "40")
    assert result.returncode == 0, result.stderr
    config = write_config(data={"root": str(leaves)})
    result = plantpheno("train", str(config), "training.epochs=1")
    assert result.returncode == 0, result.stderr
    run_dir = Path(result.stdout.split("run directory: ")[1].strip())
    assert "test (" in result.stdout and "accuracy " in result.stdout and "macro-F1 " in result.stdout
    assert "baseline, always the most frequent training class" in result.stdout and run_dir.is_dir()
    result = plantpheno("evaluate", str(run_dir), "--split", "val")
    assert result.returncode == 0, result.stderr
    assert json.loads((run_dir / "eval/val/metrics.json").read_text())["split"] == "val"
    shown = plantpheno("config", "show", str(config), "training.epochs=4")
    assert yaml.safe_load(shown.stdout)["training"]["epochs"] == 4


def test_sigterm_saves_last_and_resume_finishes(tmp_path, disease_root, write_config):
    config = write_config(data={"root": str(disease_root)}, training={"epochs": 60})
    proc = subprocess.Popen([sys.executable, "-m", "plantpheno", "train", str(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    run_dir = tmp_path / "runs" / "default" / "run"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (run_dir / "checkpoints" / "last.pt").is_file():
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "interrupted by SIGTERM" in err and f"plantpheno train --resume {run_dir}" in err
    assert json.loads((run_dir / "run.json").read_text())["status"] == "interrupted"
    last = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "state", "meta"} <= set(last)
    assert 1 <= last["state"]["epoch"] < 60
    result = plantpheno("train", "--resume", str(run_dir))
    assert result.returncode == 0, result.stderr
    assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"
    epochs = [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, 61))
