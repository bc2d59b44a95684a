"""TrackerSet: a failing backend is reported once and dropped; the others and training go on."""

from __future__ import annotations

import sys

import pytest

from plantpheno.config import validate_config
from plantpheno.errors import ConfigError
from plantpheno.reporting import RecordingReporter
from plantpheno.run.folder import RunDir
from plantpheno.tracking import flatten
from plantpheno.tracking.session import TrackerSet, build_trackers


class Recorder:
    def __init__(self, name: str, fail_on: str | None = None) -> None:
        self.name, self.fail_on, self.calls = name, fail_on, []

    def __getattr__(self, method):
        def call(*args, **kwargs):
            self.calls.append(method)
            if method == self.fail_on:
                raise OSError("No space left on device")
            return f"{self.name}-id" if method == "start" else None
        return call


def test_failing_backend_is_warned_once_and_dropped():
    reporter = RecordingReporter()
    good, bad = Recorder("good"), Recorder("bad", fail_on="log_metrics")
    trackers = TrackerSet([good, bad], reporter=reporter)
    assert trackers.start(run_name="r") == {"good": "good-id", "bad": "bad-id"}
    for step in range(3):
        trackers.log_metrics({"val/loss": 1.0, "nan": float("nan")}, step=step)
    trackers.finish("completed")
    assert good.calls == ["start", "log_metrics", "log_metrics", "log_metrics", "finish"]
    assert bad.calls == ["start", "log_metrics"]
    warnings = [message for level, message in reporter.lines if level == "warning"]
    assert len(warnings) == 1 and "bad failed in log_metrics (OSError: No space left on device)" in warnings[0]
    assert trackers.failed == {"bad": "OSError: No space left on device"}


@pytest.mark.parametrize("backend, module", [("wandb", "wandb"), ("mlflow", "mlflow"),
                                             ("tensorboard", "torch.utils.tensorboard")])
def test_missing_library_is_a_config_error_before_training(tmp_path, monkeypatch, backend, module):
    monkeypatch.setitem(sys.modules, module, None)  # as if the library were not installed
    config = validate_config({"data": {"root": str(tmp_path)}, "output_dir": str(tmp_path),
                              "tracking": {"backends": [backend]}})
    with pytest.raises(ConfigError, match=rf"tracking.backends includes {backend} .*pip install 'plantpheno\[{backend}\]'"):
        build_trackers(config, RunDir(tmp_path))


def test_flatten():
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": None, "e": True}) == {
        "a.b": "1", "a.c": "[1, 2]", "d": "null", "e": "true"}


def test_system_monitor_logs_its_start_sample_at_the_step_training_started_at(tmp_path):
    """The start sample waits 0.1 s for its CPU window on its own thread; steps finished meanwhile (a busy
    machine) must not move it: it belongs to the step at start (CI saw it logged at step 2)."""
    import json
    import time

    from plantpheno.tracking.local import LocalTracker
    from plantpheno.tracking.session import SystemMonitor

    run = RunDir(tmp_path / "run")
    local = LocalTracker(folder=run.tracking)
    trackers = TrackerSet([local])
    trackers.start(run_name="r")
    current = {"step": 0}
    monitor = SystemMonitor(trackers, interval=60)
    monitor.start(lambda: current["step"])
    current["step"] = 2  # training runs on while the sampler measures its first CPU window
    deadline = time.monotonic() + 30  # the 60 s interval keeps it waiting after the first sample
    while not (run.tracking.metrics.is_file() and run.tracking.metrics.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    current["step"] = 5
    monitor.record()
    monitor.stop()
    steps = [json.loads(line)["step"] for line in run.tracking.metrics.read_text().splitlines()
             if json.loads(line)["key"] == "system/process_rss_gb"]
    assert steps == [0, 5]


def test_mlflow_tracking_is_on_by_default_when_installed_and_off_with_one_field(tmp_path, monkeypatch):
    base = {"data": {"root": str(tmp_path)}, "output_dir": str(tmp_path)}
    assert validate_config(base).tracking.backends == ("mlflow",)
    assert validate_config({**base, "tracking": {"backends": []}}).tracking.backends == ()
    assert validate_config({**base, "tracking": {"backends": ["wandb"]}}).tracking.backends == ("wandb",)
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if MLflow were not installed: no tracker, no error
    assert validate_config(base).tracking.backends == ()
