"""torchrun DDP on CPU with gloo: one run directory, reduced metrics, identical replicas, resume anywhere."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from plantpheno.pipeline import evaluate_run

pytestmark = pytest.mark.distributed


def torchrun(config: Path, *overrides: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             "-m", "plantpheno", "train", str(config), *overrides],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not path.is_file():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.2)


def test_two_process_ddp_run(tmp_path, disease_root, write_config):
    config = write_config(data={"root": str(disease_root)}, tracking={"system_metrics_interval": 0})
    proc = torchrun(config, cwd=tmp_path)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert out.count("run directory:") == 1 and out.count("test (") == 1  # rank 0 alone reports
    runs = tmp_path / "runs" / "default"
    assert [p.name for p in runs.iterdir()] == ["run"]
    run = runs / "run"
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert checkpoints == ["best.pt", "best.pt.sha256", "last.pt", "last.pt.sha256"]
    status = json.loads((run / "run.json").read_text())
    assert status["status"] == "completed"
    job = status["distributed"]
    assert job["world_size"] == 2 and job["backend"] == "gloo" and job["global_batch_size"] == 16
    assert job["replicas_identical"] is True
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in best["model"])
    # the logged validation metrics are those of the whole validation set, not of rank 0's shard
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(log) == 2
    at_best = next(r for r in log if r["epoch"] == best["state"]["epoch"])
    single = evaluate_run(run, split="val")
    assert single["num_images"] == json.loads((run / "dataset.json").read_text())["num_images"]["val"]
    assert at_best["val/accuracy"] == pytest.approx(single["accuracy"], abs=1e-12)
    assert at_best["val/macro_f1"] == pytest.approx(single["macro_f1"], abs=1e-12)
    # rank 0's final evaluation fits the temperature and the OOD threshold on the whole validation split too
    num_val = json.loads((run / "dataset.json").read_text())["num_images"]["val"]
    assert json.loads((run / "temperature.json").read_text())["num_images"] == num_val
    assert json.loads((run / "ood.json").read_text())["num_val_images"] == num_val


def test_ddp_fine_tune_phase_starts_every_rank_from_the_best_head(tmp_path, disease_root, write_config):
    # rank 0 alone restores the best head when the head phase ends (here an early epoch's); the others take
    # it from rank 0 through the new DDP wrapper, or the replicas would differ (ReplicaCheck compares them)
    config = write_config(data={"root": str(disease_root)}, tracking={"system_metrics_interval": 0},
                          model={"backbone": "test_resnet", "freeze_backbone": True},
                          training={"epochs": 3, "learning_rate": 3.0, "scheduler": "none", "monitor": "val/loss",
                                    "feature_cache": True, "fine_tune": {"epochs": 2, "blocks": 1}})
    proc = torchrun(config, cwd=tmp_path)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    run = tmp_path / "runs" / "default" / "run"
    status = json.loads((run / "run.json").read_text())
    assert status["status"] == "completed" and status["distributed"]["replicas_identical"] is True
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3, 4, 5]
    head = [r["val/loss"] for r in log[:3]]
    assert head.index(min(head)) < 2, f"the test needs a best head before the last head epoch: {head}"
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert last["state"]["phase"] == "fine_tune" and last["state"]["phase_start"] == 3


def test_sigterm_stops_all_ranks_and_a_single_process_resumes(tmp_path, disease_root, write_config):
    config = write_config(data={"root": str(disease_root)}, training={"epochs": 20},
                          tracking={"system_metrics_interval": 0})
    proc = torchrun(config, cwd=tmp_path)
    run = tmp_path / "runs" / "default" / "run"
    _wait_for(run / "checkpoints" / "last.pt", proc)
    proc.send_signal(signal.SIGTERM)  # torchrun forwards it to every worker
    proc.communicate(timeout=120)
    status = json.loads((run / "run.json").read_text())
    assert status["status"] == "interrupted" and status["reason"] == "SIGTERM"
    saved = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["state"]
    assert saved["world_size"] == 2 and saved["epoch"] < 20
    result = subprocess.run([sys.executable, "-m", "plantpheno", "train", "--resume", str(run)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, 21))
    assert json.loads((run / "run.json").read_text())["status"] == "completed"


def test_a_dead_rank_ends_the_job_quickly(tmp_path, disease_root, write_config):
    config = write_config(data={"root": str(disease_root)}, training={"epochs": 500},
                          tracking={"system_metrics_interval": 0})
    proc = torchrun(config, cwd=tmp_path)
    _wait_for(tmp_path / "runs" / "default" / "run" / "checkpoints" / "last.pt", proc)
    workers = [p for p in psutil.Process(proc.pid).children(recursive=True) if "plantpheno" in " ".join(p.cmdline())]
    assert len(workers) == 2
    victim = next(w for w in workers if w.environ().get("RANK") == "1")
    killed_at = time.monotonic()
    victim.kill()
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert time.monotonic() - killed_at < 60, "the job should end soon after one rank dies"
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)


def _leaky_config(tmp_path: Path, disease_root: Path, write_config) -> Path:
    """A manifest that lists one image in train and in test: the data checks refuse it (an error-level finding)."""
    files = sorted(disease_root.rglob("*.jpg"))
    manifest = tmp_path / "leaky.csv"
    rows = [f"{p},{p.parent.name},{('train', 'train', 'val', 'test')[i % 4]}" for i, p in enumerate(files)]
    manifest.write_text("path,label,split\n" + "\n".join([*rows, f"{files[0]},{files[0].parent.name},test"]) + "\n")
    return write_config(data={"manifest": str(manifest), "checks": {"enabled": True}},
                        tracking={"system_metrics_interval": 0})


def _assert_refused_by_every_rank(out: str, err: str, tmp_path: Path) -> None:
    assert "gloo" not in (out + err).lower() and "Connection" not in out + err, err[-3000:]
    refusals = [line for line in (out + err).splitlines()
                if line.startswith("plantpheno: error: the data checks found 1 error(s)")]
    assert len(refusals) == 2, err[-3000:]  # rank 0's refusal, and the same message from rank 1
    assert "duplicate_paths" in out + err
    assert not (tmp_path / "runs" / "default" / "run").exists()


def test_a_data_check_refusal_on_rank_0_ends_every_rank_with_its_message(tmp_path, disease_root, write_config):
    proc = torchrun(_leaky_config(tmp_path, disease_root, write_config), cwd=tmp_path)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode != 0
    # the workers print no traceback and no gloo error; torchrun's launcher itself always ends a job with a non-zero
    # worker by raising ChildFailedError (its own traceback, through torch/distributed/run.py only)
    for block in (out + err).split("Traceback (most recent call last):")[1:]:
        frames = block.split("ChildFailedError")[0]
        assert "ChildFailedError" in block and "/plantpheno/" not in frames, block[:3000]
    _assert_refused_by_every_rank(out, err, tmp_path)


def test_train_nproc_ends_a_refusal_with_the_message_exit_2_and_no_traceback(tmp_path, disease_root, write_config):
    """``plantpheno train --nproc 2`` runs torchrun's launcher (plantpheno.cli.torchrun), which ends a job whose
    every failed rank exited 2 (one line each, already printed) without the launcher's ChildFailedError traceback."""
    config = _leaky_config(tmp_path, disease_root, write_config)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "plantpheno", "train", str(config), "--nproc", "2"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stdout + done.stderr and "ChildFailedError" not in done.stderr, done.stderr[-3000:]
    _assert_refused_by_every_rank(done.stdout, done.stderr, tmp_path)
