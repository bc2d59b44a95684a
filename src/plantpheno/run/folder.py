"""The run directory: OUTPUT_DIR/<experiment>/<run>/ and what it records about how a run was made."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plantpheno.files.atomic import atomic_write_text, storage_error
from plantpheno.config import Config, config_to_yaml, load_config
from plantpheno.errors import RunDirError
from plantpheno.run.lock import RunLock, lock_holder

CONFIG_FILE = "config.yaml"
ENVIRONMENT_FILE = "environment.json"
STATUS_FILE = "run.json"
METRICS_LOG = "metrics.jsonl"
SPLIT_MANIFEST = "split.csv"
DATASET_INFO = "dataset.json"
BAD_IMAGES = "bad_images.csv"
DATA_CHECK = "data_check.json"
TRAINING_CURVES = "training_curves.png"
CHECKPOINTS = "checkpoints"
BEST, LAST = "best.pt", "last.pt"
EVAL_DIR = "eval"
TRACKING_DIR = "tracking"
TENSORBOARD_DIR = "tensorboard"
WANDB_DIR = "wandb"
LOCK_FILE = "run.lock"
# what run.json says while its process works; a run in one of these whose lock nobody holds has crashed
ACTIVE_STATUSES = ("running", "evaluating")
CRASHED = "crashed"
REPORT_FILE = "report.html"
TEMPERATURE_FILE = "temperature.json"
BAND_IMPORTANCE = "band_importance.json"


@dataclass(frozen=True)
class EvalDir:
    """``RUN_DIR/eval/<split>/``: one split's evaluation."""

    path: Path

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def predictions(self) -> Path:
        return self.path / "predictions.csv"

    @property
    def classification_report(self) -> Path:
        return self.path / "classification_report.txt"

    @property
    def per_class(self) -> Path:
        return self.path / "per_class.csv"

    @property
    def confusion_matrix(self) -> Path:
        return self.path / "confusion_matrix.png"

    @property
    def predicted_vs_true(self) -> Path:
        return self.path / "predicted_vs_true.png"


@dataclass(frozen=True)
class TrackingDir:
    """``RUN_DIR/tracking/``: the always-on local tracking log (plain files, no tracking library needed)."""

    path: Path

    @property
    def params(self) -> Path:
        return self.path / "params.json"

    @property
    def tags(self) -> Path:
        return self.path / "tags.json"

    @property
    def metrics(self) -> Path:
        """One JSON line per logged value: key, value, step, axis, time."""
        return self.path / "metrics.jsonl"

    @property
    def artifacts(self) -> Path:
        return self.path / "artifacts.txt"

    @property
    def status(self) -> Path:
        return self.path / "status.json"


@dataclass(frozen=True)
class RunDir:
    """A run directory, ``OUTPUT_DIR/<experiment>/<run>/``: the one place that names its files.

    Everything that reads or writes a run asks this type for the path (importable without torch)."""

    path: Path

    @classmethod
    def of(cls, run: RunDir | Path | str) -> RunDir:
        return run if isinstance(run, RunDir) else cls(Path(run))

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def experiment(self) -> str:
        return self.path.parent.name

    @property
    def config(self) -> Path:
        """The resolved config the run was started with."""
        return self.path / CONFIG_FILE

    @property
    def status(self) -> Path:
        """``run.json``: status, best epoch, headline metric, tracker run ids, registration."""
        return self.path / STATUS_FILE

    @property
    def environment(self) -> Path:
        return self.path / ENVIRONMENT_FILE

    @property
    def metrics_log(self) -> Path:
        """One JSON line per epoch."""
        return self.path / METRICS_LOG

    @property
    def split_manifest(self) -> Path:
        """``split.csv``: every image with its target and split (reusable as ``data.manifest``)."""
        return self.path / SPLIT_MANIFEST

    @property
    def dataset_info(self) -> Path:
        return self.path / DATASET_INFO

    @property
    def bad_images(self) -> Path:
        return self.path / BAD_IMAGES

    @property
    def data_check(self) -> Path:
        """``data_check.json``: the findings of the data checks run before training (see
        :mod:`plantpheno.data.doctor.findings` for its format)."""
        return self.path / DATA_CHECK

    @property
    def band_importance(self) -> Path:
        """``band_importance.json``: a band run's drop in the validation headline per band replaced by its training
        mean (:mod:`plantpheno.evaluation.band_importance`)."""
        return self.path / BAND_IMPORTANCE

    @property
    def training_curves(self) -> Path:
        return self.path / TRAINING_CURVES

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoints / BEST

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / LAST

    @property
    def lock_file(self) -> Path:
        """``run.lock``: held (flock) by the one process that writes the run; see :mod:`plantpheno.run.lock`."""
        return self.path / LOCK_FILE

    def lock(self, purpose: str) -> RunLock:
        """The run's writer lock (not yet taken): ``with run.lock("resuming"): ...``."""
        return RunLock(self.lock_file, run_path=self.path, purpose=purpose)

    def holder(self) -> dict[str, Any] | None:
        """The process writing this run now (PID, host, purpose, since, command), or None."""
        return lock_holder(self.lock_file)

    def current_status(self) -> str | None:
        """``run.json``'s status, except that a run it calls running (or evaluating) whose writer lock nobody
        holds is ``crashed``: its process ended without recording how (killed, out of memory, power lost).
        ``running`` for a run that is being written but has no ``run.json`` yet; None if neither."""
        try:
            recorded = self.read_status().get("status")
        except (OSError, ValueError, AttributeError):
            recorded = None
        recorded = recorded if isinstance(recorded, str) and recorded else None
        holder = self.holder()
        if recorded in ACTIVE_STATUSES and holder is None:
            return CRASHED
        if recorded is None and holder is not None:
            return "running"
        return recorded

    def checkpoint_to_use(self) -> Path | None:
        """The best checkpoint, else the last one, else None (no epoch finished)."""
        for path in (self.best_checkpoint, self.last_checkpoint):
            if path.is_file():
                return path
        return None

    @property
    def tracking(self) -> TrackingDir:
        """The always-on local tracking log's folder."""
        return TrackingDir(self.path / TRACKING_DIR)

    @property
    def tensorboard(self) -> Path:
        return self.path / TENSORBOARD_DIR

    @property
    def report(self) -> Path:
        """``report.html``: the self-contained report of the run's test evaluation."""
        return self.path / REPORT_FILE

    def report_for(self, split: str) -> Path:
        """The report of ``split``'s evaluation: ``report.html`` for test, ``report_<split>.html`` for any other,
        so evaluating another split never replaces the test report."""
        return self.report if split == "test" else self.path / f"report_{split}.html"

    @property
    def temperature(self) -> Path:
        """``temperature.json``: the softmax temperature fitted on the validation split (classification)."""
        return self.path / TEMPERATURE_FILE

    @property
    def wandb(self) -> Path:
        return self.path / WANDB_DIR

    def eval(self, split: str) -> EvalDir:
        return EvalDir(self.path / EVAL_DIR / split)

    def artifacts(self) -> tuple[Path, ...]:
        """The run's own files that trackers keep as artifacts (those that exist)."""
        files = (self.config, self.split_manifest, self.dataset_info, self.environment, self.metrics_log,
                 self.training_curves, self.bad_images, self.data_check, self.temperature, self.band_importance,
                 self.budget_leaderboard, self.budget_leaderboard_csv,
                 *(self.report_for(split) for split in ("test", "val", "train")))
        return tuple(p for p in files if p.is_file())

    @property
    def budget_leaderboard(self) -> Path:
        """Budget mode's candidates, their validation scores and seconds, the rule and the choice (JSON)."""
        return self.path / "budget_leaderboard.json"

    @property
    def budget_leaderboard_csv(self) -> Path:
        return self.path / "budget_leaderboard.csv"

    def is_run(self) -> bool:
        """A folder is a run when it holds ``config.yaml`` or ``run.json``."""
        return self.path.is_dir() and (self.config.is_file() or self.status.is_file())

    # --- reading and writing ------------------------------------------------------------------

    def write_config(self, config: Config) -> None:
        atomic_write_text(self.config, config_to_yaml(config))

    def read_config(self) -> Config:
        """The resolved config the run was started with."""
        if not self.config.is_file():
            raise RunDirError(f"{self.path} is not a plantpheno run directory (no {CONFIG_FILE})")
        return load_config(self.config)

    def read_status(self) -> dict[str, Any]:
        """``run.json`` as a dict (empty if the run never got that far)."""
        return json.loads(self.status.read_text(encoding="utf-8")) if self.status.is_file() else {}

    def write_status(self, status: str, **fields: Any) -> None:
        """``run.json``: status (running/interrupted/failed/completed) plus a short summary."""
        current = self.read_status()
        current.update(status=status, updated=time.strftime("%Y-%m-%dT%H:%M:%S%z"), **fields)
        atomic_write_text(self.status, json.dumps(current, indent=2, default=str) + "\n")

    def write_environment(self, device: str) -> None:
        atomic_write_text(self.environment, json.dumps(environment(device), indent=2) + "\n")

    def read_dataset_info(self) -> dict[str, Any]:
        return json.loads(self.dataset_info.read_text(encoding="utf-8")) if self.dataset_info.is_file() else {}


def data_check_path(output_dir: Path, experiment: str) -> Path:
    """Where ``plantpheno data check`` (and a ``train`` stopped by the checks) writes the findings outside a run:
    ``OUTPUT_DIR/<experiment>/data_check.json``."""
    return output_dir / experiment / DATA_CHECK


def create_run_dir(output_dir: Path, experiment: str, run_name: str | None) -> tuple[RunDir, RunLock]:
    """Make a new, empty run folder ``OUTPUT_DIR/<experiment>/<run_name>`` (a time stamp without a name) and take
    its writer lock; a named run that already exists is an error (resume it instead, unless another process is
    running it: then that process is named)."""
    parent = output_dir / experiment
    if run_name is not None:
        run = RunDir(parent / run_name)
        _mkdir(run.path, parents=True, exist_ok=True)
        lock = run.lock("training").acquire()
        if any(p.name != LOCK_FILE for p in run.path.iterdir()):
            lock.release()
            status = run.current_status() or "unknown"
            if status == "completed":
                advice = "choose another run_name (or delete the folder)"
            else:
                advice = f"resume it with `plantpheno train --resume {run.path}` or choose another run_name"
            raise RunDirError(f"run directory {run.path} already exists (status: {status}); {advice}")
        return run, lock
    stamp = time.strftime("%Y%m%d-%H%M%S")
    _mkdir(parent, parents=True, exist_ok=True)
    for suffix in range(1000):
        run = RunDir(parent / (stamp if suffix == 0 else f"{stamp}-{suffix}"))
        try:
            run.path.mkdir()  # atomic: two runs started in the same second get different folders
        except FileExistsError:
            continue
        except OSError as exc:
            raise storage_error(exc, run.path, existed=False) from None
        return run, run.lock("training").acquire()
    raise RunDirError(f"cannot create a new run folder under {parent}")


def check_output_dir(output_dir: Path) -> None:
    """``output_dir`` is a folder this process can write into, or can create: checked before any long work.

    Raises:
        ConfigError: naming the path that is in the way or not writable.
    """
    from plantpheno.errors import ConfigError

    path = output_dir
    while not path.exists():
        if path.is_symlink():
            raise ConfigError(f"output_dir {output_dir}: {path} is a broken symbolic link")
        if path.parent == path:
            break
        path = path.parent
    if not path.is_dir():
        where = "" if path == output_dir else f" ({path} is a file)"
        raise ConfigError(f"output_dir {output_dir} is not a folder{where}; choose another output_dir")
    if not os.access(path, os.W_OK | os.X_OK):
        read_only = " (read-only filesystem)" if _read_only(path) else ""
        what = "cannot be written" if path == output_dir else f"cannot be created: {path} is not writable"
        raise ConfigError(f"output_dir {output_dir} {what}{read_only}; choose another output_dir or fix its "
                          f"permissions")


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def _mkdir(path: Path, **kwargs: bool) -> None:
    try:
        path.mkdir(**kwargs)
    except OSError as exc:
        raise storage_error(exc, path, existed=path.exists()) from None


def environment(device: str) -> dict[str, Any]:
    """Versions, code revision and hardware, recorded with every run."""
    import timm
    import torch

    from plantpheno.version import __version__

    commit, dirty = _git_state()
    return {
        "plantpheno": __version__, "python": sys.version.split()[0], "torch": torch.__version__,
        "timm": timm.__version__, "platform": platform.platform(), "hostname": platform.node(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": device,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "git_commit": commit, "git_dirty": dirty, "command": sys.argv, "cwd": os.getcwd(),
    }


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
