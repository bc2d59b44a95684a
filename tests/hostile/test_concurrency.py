"""One writer per run directory (harm 1 of issue 16): two ``train --resume RUN`` at once both ran to the end and
interleaved the epoch log (1, 2, 4, 3, 5, 6, 4, ...), and the "already exists" message suggested --resume to a
second user of a running run. Real processes, real signals, the kernel's own locks."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import yaml
from cli_harness import kill, plantpheno, refused, start, wait_for

from plantpheno.run.folder import RunDir

pytestmark = pytest.mark.slow


def _epochs(run: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def _holder_pid(run: Path) -> int | None:
    holder = RunDir(run).holder()
    return holder.get("pid") if holder else None


def _refused_together(*commands: list[str]) -> list:
    """Run several commands at once (each is refused within seconds of starting; in turn they took minutes)."""
    import subprocess

    procs = [start(*command) for command in commands]
    outputs = [p.communicate(timeout=600) for p in procs]
    return [subprocess.CompletedProcess(p.args, p.returncode, out, err) for p, (out, err) in zip(procs, outputs)]


def test_a_second_writer_is_refused_naming_the_holder_and_a_dead_holder_is_detected(tmp_path, disease_root):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({  # many epochs: it is still training whenever the test signals it
        "seed": 0, "device": "cpu", "output_dir": str(tmp_path / "runs"), "run_name": "shared",
        "data": {"root": str(disease_root), "image_size": 32, "batch_size": 8, "num_workers": 0},
        "model": {"backbone": "test_resnet"}, "training": {"epochs": 500, "progress_bar": False},
        "evaluation": {"bootstrap_samples": 50}, "tracking": {"system_metrics_interval": 0}}))
    run = tmp_path / "runs" / "default" / "shared"

    first = start("train", str(config))
    assert wait_for(lambda: (run / "checkpoints" / "last.pt").is_file(), timeout=600, proc=first), first.communicate()
    assert _holder_pid(run) == first.pid

    # a resume, a new training run of the same name and an evaluation, while it trains: refused, naming it
    second, third, fourth = _refused_together(["train", "--resume", str(run)], ["train", str(config)],
                                              ["evaluate", str(run)])
    refused(second, f"run {run} is in use: process {first.pid} has been training it since")
    refused(third, f"is in use: process {first.pid}")
    assert "resume it with" not in third.stderr, "a second user of a running run must not be told to resume it"
    refused(fourth, f"is in use: process {first.pid}")  # evaluation writes into the run too

    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=300)
    assert first.returncode == 128 + signal.SIGTERM
    assert RunDir(run).current_status() == "interrupted" and _holder_pid(run) is None

    # harm 1 itself: two resumes at once
    resumed = start("train", "--resume", str(run))
    assert wait_for(lambda: _holder_pid(run) == resumed.pid, timeout=600, proc=resumed), resumed.communicate()
    racing = plantpheno("train", "--resume", str(run))
    refused(racing, f"is in use: process {resumed.pid} has been resuming it")
    assert "resume it with" not in racing.stderr

    # a holder killed outright: the kernel drops its lock, and the run no longer claims to be running
    done = len(_epochs(run))
    assert wait_for(lambda: len(_epochs(run)) > done, timeout=600, proc=resumed)
    kill(resumed)
    assert json.loads((run / "run.json").read_text())["status"] == "running"  # what the dead process left
    assert RunDir(run).holder() is None and RunDir(run).current_status() == "crashed"
    listed = plantpheno("runs", "list", "--output-dir", str(tmp_path / "runs"), "--json")
    assert [r["status"] for r in json.loads(listed.stdout)] == ["crashed"]

    last = start("train", "--resume", str(run))  # the crashed run resumes
    done = len(_epochs(run))
    assert wait_for(lambda: len(_epochs(run)) > done + 1, timeout=600, proc=last), last.communicate()
    last.send_signal(signal.SIGTERM)
    last.communicate(timeout=300)
    assert last.returncode == 128 + signal.SIGTERM
    epochs = _epochs(run)
    assert epochs == list(range(1, len(epochs) + 1)), f"the epoch log must hold each epoch once, in order: {epochs}"
    assert RunDir(run).current_status() == "interrupted" and not RunDir(run).lock_file.exists()
