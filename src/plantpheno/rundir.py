"""The run directory: OUTPUT_DIR/<experiment>/<run>/ and what it records about how a run was made."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from plantpheno.atomic import atomic_write_text
from plantpheno.config import Config, config_to_yaml, load_config
from plantpheno.errors import RunDirError

CONFIG_FILE = "config.yaml"
ENVIRONMENT_FILE = "environment.json"
STATUS_FILE = "run.json"
METRICS_LOG = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
EVAL_DIR = "eval"


def create_run_dir(config: Config) -> Path:
    """Make a new, empty run folder; a named run that already exists is an error (resume it instead)."""
    parent = config.output_dir / config.experiment
    if config.run_name is not None:
        run_dir = parent / config.run_name
        if run_dir.exists() and any(run_dir.iterdir()):
            raise RunDirError(
                f"run directory {run_dir} already exists; resume it with `plantpheno train --resume {run_dir}` "
                f"or choose another run_name"
            )
        run_dir.mkdir(parents=True, exist_ok=True)
        return run_dir
    stamp = time.strftime("%Y%m%d-%H%M%S")
    parent.mkdir(parents=True, exist_ok=True)
    for suffix in range(1000):
        run_dir = parent / (stamp if suffix == 0 else f"{stamp}-{suffix}")
        try:
            run_dir.mkdir()  # atomic: two runs started in the same second get different folders
            return run_dir
        except FileExistsError:
            continue
    raise RunDirError(f"cannot create a new run folder under {parent}")


def write_run_config(run_dir: Path, config: Config) -> None:
    atomic_write_text(run_dir / CONFIG_FILE, config_to_yaml(config))


def read_run_config(run_dir: Path) -> Config:
    """The resolved config a run was started with."""
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise RunDirError(f"{run_dir} is not a plantpheno run directory (no {CONFIG_FILE})")
    return load_config(path)


def read_status(run_dir: Path) -> dict[str, Any]:
    """``run.json`` as a dict (empty if the run never got that far)."""
    path = run_dir / STATUS_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def write_status(run_dir: Path, status: str, **fields: Any) -> None:
    """``run.json``: status (running/interrupted/failed/completed) plus a short summary."""
    current = read_status(run_dir)
    current.update(status=status, updated=time.strftime("%Y-%m-%dT%H:%M:%S%z"), **fields)
    atomic_write_text(run_dir / STATUS_FILE, json.dumps(current, indent=2, default=str) + "\n")


def environment(device: str) -> dict[str, Any]:
    """Versions, code revision and hardware, recorded with every run."""
    import timm
    import torch

    from plantpheno import __version__

    commit, dirty = _git_state()
    return {
        "plantpheno": __version__, "python": sys.version.split()[0], "torch": torch.__version__,
        "timm": timm.__version__, "platform": platform.platform(), "hostname": platform.node(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": device,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "git_commit": commit, "git_dirty": dirty, "command": sys.argv, "cwd": os.getcwd(),
    }


def write_environment(run_dir: Path, device: str) -> None:
    atomic_write_text(run_dir / ENVIRONMENT_FILE, json.dumps(environment(device), indent=2) + "\n")


def _git_state() -> tuple[str, bool | None]:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return "no git", None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                text=True, timeout=10)
        return commit.stdout.strip(), bool(status.stdout.strip())
    except (OSError, subprocess.TimeoutExpired):
        return "no git", None
