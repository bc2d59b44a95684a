"""Writes that cannot happen (harms 4 and 7 of issue 16): a full disk gave a traceback ("RuntimeError: unexpected
pos ...") and left run.json at "running"; an output_dir that is a file or not writable gave a traceback after a
15 s image check. Real faults: a small tmpfs in a private mount namespace (a real ENOSPC), the kernel's file size
limit (a real EFBIG, no privileges needed), a read-only filesystem."""

from __future__ import annotations

import json
import os
import resource
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from cli_harness import can_mount_tmpfs, plantpheno, refused

pytestmark = pytest.mark.slow


def _config(tmp_path: Path, data_root: Path, output_dir: Path, *, epochs: int = 3) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({
        "seed": 0, "device": "cpu", "output_dir": str(output_dir), "run_name": "run",
        "data": {"root": str(data_root), "image_size": 32, "batch_size": 8, "num_workers": 0},
        "model": {"backbone": "test_resnet"}, "training": {"epochs": epochs, "progress_bar": False},
        "evaluation": {"bootstrap_samples": 50}, "tracking": {"system_metrics_interval": 0}}))
    return path


def _in_namespace(prefix: list[str], script: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, "sh", "-c", script], capture_output=True, text=True, errors="backslashreplace",
                          timeout=timeout, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def _after_a_failed_write(run: Path) -> None:
    """What a failed write must leave: run.json says failed, every checkpoint loads, no temporary file."""
    status = json.loads((run / "run.json").read_text())
    assert status["status"] == "failed" and "cannot write" in status["reason"]
    for path in (run / "checkpoints").glob("*.pt"):
        torch.load(path, weights_only=True)
    assert not list(run.rglob("*.tmp"))


def test_a_full_disk_is_one_message_run_json_failed_and_the_run_resumes(tmp_path, disease_root):
    prefix = can_mount_tmpfs()
    if prefix is None:
        pytest.skip("cannot mount a small tmpfs here (needs root or user namespaces); the file size limit test "
                    "covers the same write path")
    small, saved = tmp_path / "small", tmp_path / "saved"
    small.mkdir()
    config = _config(tmp_path, disease_root, small / "runs")
    # 9 MB: epoch 1's checkpoints (best 1.5 MB + last 4.6 MB) fit, epoch 2's new last.pt beside the old does not
    script = (f"mount -t tmpfs -o size=9m tmpfs {shlex.quote(str(small))} && "
              f"{shlex.quote(sys.executable)} -m plantpheno train {shlex.quote(str(config))}; rc=$?; "
              f"cp -a {shlex.quote(str(small / 'runs'))} {shlex.quote(str(saved))}; exit $rc")
    result = _in_namespace(prefix, script)
    refused(result, "cannot write", "no space left on the device", "free there)", "is unchanged",
            "run.json marks the run failed", "holds the last completed epoch", "then resume with: plantpheno train "
            "--resume")
    run = saved / "default" / "run"
    _after_a_failed_write(run)
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["state"]["epoch"] == 1

    resumed = plantpheno("train", "--resume", str(run))  # the space is back: it goes on from epoch 1
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def _file_size_limit(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # then a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_write_past_the_file_size_limit_is_one_message_and_the_run_resumes(tmp_path, disease_root):
    config = _config(tmp_path, disease_root, tmp_path / "runs", epochs=2)
    # 3 MB: best.pt (1.5 MB) fits, last.pt (4.6 MB) does not; torch.save used to end in "unexpected pos"
    result = plantpheno("train", str(config), preexec_fn=_file_size_limit(3 << 20))
    refused(result, "cannot write", "last.pt: file too large", "last.pt was not written",
            "run.json marks the run failed", "no resumable checkpoint", "then resume with")
    run = tmp_path / "runs" / "default" / "run"
    _after_a_failed_write(run)
    resumed = plantpheno("train", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "starts again from epoch 1" in resumed.stderr
    assert json.loads((run / "run.json").read_text())["status"] == "completed"


@pytest.fixture
def dirty_root(tmp_path, disease_root) -> Path:
    """The images plus one corrupt file: if the image check ran first, its error would be the one reported."""
    import shutil

    root = tmp_path / "leaves"
    shutil.copytree(disease_root, root)
    (root / "rust" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff not really")
    return root


def test_output_dir_that_is_a_file_is_refused_before_the_image_check(tmp_path, dirty_root):
    blocker = tmp_path / "runs"
    blocker.write_text("a file where the runs should go\n")
    refused(plantpheno("train", str(_config(tmp_path, dirty_root, blocker))),
            f"output_dir {blocker} is not a folder")
    refused(plantpheno("train", str(_config(tmp_path, dirty_root, blocker / "deeper"))),
            f"output_dir {blocker / 'deeper'} is not a folder ({blocker} is a file)")
    assert blocker.read_text() == "a file where the runs should go\n"


def test_output_dir_that_is_not_writable_is_refused_before_the_image_check(tmp_path, dirty_root):
    locked = tmp_path / "locked"
    locked.mkdir()
    config = _config(tmp_path, dirty_root, locked / "runs")
    if os.geteuid() != 0:
        locked.chmod(0o555)
        try:
            result = plantpheno("train", str(config))
        finally:
            locked.chmod(0o755)
        refused(result, f"output_dir {locked / 'runs'} cannot be created: {locked} is not writable")
        return
    prefix = can_mount_tmpfs()
    if prefix is None:
        pytest.skip("running as root, which may write anywhere, and no mount namespace for a read-only folder")
    script = (f"mount -t tmpfs -o ro,size=1m tmpfs {shlex.quote(str(locked))} && "
              f"exec {shlex.quote(sys.executable)} -m plantpheno train {shlex.quote(str(config))}")
    refused(_in_namespace(prefix, script), f"output_dir {locked / 'runs'} cannot be created: {locked} is not "
                                            f"writable (read-only filesystem)")
