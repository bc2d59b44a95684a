"""Shared fixtures: tiny synthetic datasets, a config builder, and an isolated environment."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
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

# `make test` runs `-m "not e2e"`; `make test-all` runs everything. A test is end to end when it lives in one of
# these folders or carries one of these marks: a rule, not a list, so tests added later land on the right side.
E2E_FOLDERS = ("integration", "hostile")
E2E_MARKS = ("slow", "distributed", "plantvillage")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every end-to-end test (see ``E2E_FOLDERS``, ``E2E_MARKS``) ``e2e``. The one end-to-end test that
    `make test` keeps, tests/smoke/test_first_run.py, is quick by design and in neither."""
    tests = Path(__file__).resolve().parent
    for item in items:
        try:
            folder = item.path.resolve().relative_to(tests).parts[0]
        except ValueError:  # a test collected from outside tests/ (pytest given another path)
            folder = ""
        if folder in E2E_FOLDERS or any(item.get_closest_marker(mark) for mark in E2E_MARKS):
            item.add_marker(pytest.mark.e2e)


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


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory):
    """``trained_run(**sections)``: the ``tiny_config`` run of those sections, trained once per session and shared
    by every test that asks for the same sections (the uninterrupted reference of the resume tests, say). Tests
    only read it; one that changes its files copies it first (``shutil.copytree``). Returns pipeline.train's
    result."""
    runs: dict[str, Any] = {}

    def train(**sections: Any):
        from plantpheno import pipeline
        from plantpheno.config import validate_config

        key = json.dumps(sections, sort_keys=True, default=str)
        if key not in runs:
            runs[key] = pipeline.train(validate_config(tiny_config(tmp_path_factory.mktemp("shared-run"),
                                                                   **sections)))
        return runs[key]

    return train


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
    """A raw config dict for a fast CPU run; ``sections`` are merged one level deep.

    What a test is not about stays off: the data checks before training and the report after it (together about
    60 % of a tiny run's CPU time). A test about them turns them on: ``evaluation={"report": True}``, and
    ``data={"checks": {...}}`` (any checks section given replaces this one, so its ``enabled`` is the default,
    true). The bootstrap stays on at 200 resamples: it costs about 0.3 s CPU per run, and the interval is part of
    every number a user sees."""
    raw: dict[str, Any] = {
        "seed": 0,
        "output_dir": str(tmp_path / "runs"),
        "run_name": "run",
        "device": "cpu",
        "data": {"image_size": 32, "batch_size": 8, "num_workers": 0, "checks": {"enabled": False}},
        "model": {"backbone": TINY_BACKBONE},
        "training": {"epochs": 2, "learning_rate": 0.003, "progress_bar": False},
        "evaluation": {"bootstrap_samples": 200, "report": False},
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


def load_benchmark(name: str) -> Any:
    """The script ``benchmarks/<name>.py`` as a module (its folder on the path while it loads, for its own imports)."""
    import importlib.util

    bench = str(REPO / "benchmarks")
    sys.path.insert(0, bench)
    try:
        spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(bench)


def stop_process_group(proc: subprocess.Popen, timeout: float = 30) -> None:
    """Stop a server started with ``start_new_session=True`` and all its workers: SIGTERM to its process
    group, SIGKILL if it has not ended after ``timeout`` seconds."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)


@contextmanager
def mlflow_served(model: str, log: Path, *, env: dict[str, str | None] | None = None) -> Iterator[str]:
    """A real ``mlflow models serve`` of ``model`` (a ``models:/`` URI or a pyfunc folder) on a free port of
    127.0.0.1, one worker, this interpreter's environment (``env``: variables added, a None value removes one);
    yields its base URL once it answers ``/ping``, and stops it and its workers after. Its output goes to ``log``."""
    environ = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    for key, value in (env or {}).items():
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value
    port = free_port()
    with log.open("w") as out:
        server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", model, "--env-manager",
                                   "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                                  env=environ, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for_server(server, base, log)
            yield base
        finally:
            stop_process_group(server)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a server a test starts)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post_json(url: str, body: dict, timeout: float = 120) -> tuple[int, dict]:
    """POST ``body`` as JSON; the HTTP status and the JSON answer, an error status included."""
    import json
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_for_server(server: subprocess.Popen, base: str, log: Path, timeout: float = 300) -> None:
    """Wait until the server at ``base`` answers ``/ping`` with 200; fail with its log if it exits or does not
    answer within ``timeout`` seconds (torch, timm and mlflow load slowly on 2 busy cores)."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        assert server.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"server not up in {timeout:.0f} s: " + log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"{base}/ping", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
