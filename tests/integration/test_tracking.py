"""Real trackers, read back: MLflow on sqlite, W&B offline, TensorBoard event files, the local log."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import mlflow  # a test dependency: a missing install must fail here, not skip
import pytest

from conftest import StopAt
from plantpheno import pipeline
from plantpheno.config import load_config
from plantpheno.tracking.mlflow_backend import default_uri
from plantpheno.training.loop import Interrupted


def _tracked(make_config, disease_root, backends, **sections):
    return make_config(data={"root": str(disease_root)},
                       tracking={"backends": backends, "wandb": {"mode": "offline"}, "system_metrics_interval": 0.05},
                       **sections)


def _mlflow_run(output_dir: Path):
    client = mlflow.MlflowClient(default_uri(output_dir))
    experiment = client.get_experiment_by_name("default")
    runs = client.search_runs([experiment.experiment_id])
    return client, runs


def wandb_records(run_dir: Path) -> list:
    """Decode W&B's offline transaction logs (LevelDB log framing around protobuf Records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    out = []
    for path in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
        data, pos, buf = path.read_bytes(), 7, b""
        assert data[:4] == b":W&B"
        while pos + 7 <= len(data):
            space = 32768 - pos % 32768
            if space < 7:
                pos += space
                continue
            _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
            chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
            if kind in (1, 4):
                out.append(pb.Record.FromString(buf + chunk if kind == 4 else chunk))
            elif kind in (2, 3):
                buf = chunk if kind == 2 else buf + chunk
            else:
                break
    return out


def _wandb_history(records) -> list[dict[str, float]]:
    rows = []
    for r in records:
        if r.WhichOneof("record_type") == "history":
            rows.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item})
    return rows


def test_every_backend_records_params_metrics_system_artifacts_tags(make_config, disease_root):
    config = _tracked(make_config, disease_root, ["mlflow", "wandb", "tensorboard"])
    result = pipeline.train(config)
    run_dir = result.run_dir
    fingerprint = json.loads((run_dir / "dataset.json").read_text())["fingerprint"]

    # MLflow
    client, runs = _mlflow_run(config.output_dir)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params["training.learning_rate"] == "0.003"
    assert run.data.params["model.backbone"] == "test_resnet" and run.data.params["data.num_classes"] == "4"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/loss")] == [1, 2]
    assert len(client.get_metric_history(run.info.run_id, "system/cpu_percent")) >= 1
    for key in ("lr", "time/epoch_s", "time/images_per_s", "train/accuracy", "val/macro_f1", "test/accuracy",
                "test/accuracy_ci_low", "test/unknown_fraction", "test/unknown_fraction_high",
                "test/val_unknown_fraction"):
        assert key in run.data.metrics, key
    assert run.data.metrics["test/accuracy"] == pytest.approx(result.metrics["accuracy"])
    unknown = result.metrics["unknowns"]["flagged"]  # the OOD detector's share of test, with its interval
    assert run.data.metrics["test/unknown_fraction"] == pytest.approx(unknown["fraction"])
    assert run.data.metrics["test/unknown_fraction_low"] == pytest.approx(unknown["low"])
    tags = run.data.tags
    assert tags["dataset_fingerprint"] == fingerprint and tags["git_commit"] and tags["device"] == "cpu"
    assert {"plantpheno_version", "torch_version", "timm_version", "git_dirty"} <= set(tags)
    artifacts = {a.path for folder in ("run", "eval/test", "checkpoints")
                 for a in client.list_artifacts(run.info.run_id, folder)}
    assert {"run/config.yaml", "run/split.csv", "eval/test/confusion_matrix.png", "eval/test/predictions.csv",
            "eval/test/classification_report.txt", "checkpoints/best.pt"} <= artifacts
    assert json.loads((run_dir / "run.json").read_text())["tracking"]["mlflow"] == run.info.run_id

    # Weights & Biases (offline)
    records = wandb_records(run_dir)
    history = _wandb_history(records)
    epochs = [row["epoch"] for row in history if "val/loss" in row]
    assert epochs == [1, 2]
    assert any("system/cpu_percent" in row and "global_step" in row for row in history)
    assert any("test/accuracy" in row and "test/unknown_fraction" in row for row in history)
    config_keys = {u.key for r in records if r.WhichOneof("record_type") == "config" for u in r.config.update}
    assert {"training.learning_rate", "tag/dataset_fingerprint"} <= config_keys
    assert any(r.WhichOneof("record_type") == "artifact" and r.artifact.type == "model" for r in records)

    # TensorBoard
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("val/loss")] == [1, 2]
    assert {"system/cpu_percent", "test/unknown_fraction", "test/unknown_fraction_low"} <= set(events.Tags()["scalars"])
    assert "eval/test/confusion_matrix" in events.Tags()["images"]
    hparams = [p for p in (run_dir / "tensorboard").rglob("events.out.tfevents.*")]
    assert any(b"hparams" in p.read_bytes() for p in hparams)

    # the local log is always there
    local = run_dir / "tracking"
    assert json.loads((local / "params.json").read_text())["training.learning_rate"] == "0.003"
    assert json.loads((local / "tags.json").read_text())["dataset_fingerprint"] == fingerprint
    logged = [json.loads(line)["key"] for line in (local / "metrics.jsonl").read_text().splitlines()]
    assert "val/loss" in logged and "system/cpu_percent" in logged and "test/accuracy" in logged


def test_resumed_run_continues_the_same_tracker_runs(make_config, disease_root):
    config = _tracked(make_config, disease_root, ["mlflow", "wandb"], training={"epochs": 3})
    with pytest.raises(Interrupted):
        pipeline.train(config, callbacks=[StopAt(8)])  # 5 steps per epoch: stops inside epoch 2
    run_dir = config.output_dir / "default" / "run"
    ids = json.loads((run_dir / "run.json").read_text())["tracking"]
    client, runs = _mlflow_run(config.output_dir)
    assert [r.info.status for r in runs] == ["KILLED"]

    pipeline.resume(run_dir)
    assert json.loads((run_dir / "run.json").read_text())["tracking"] == ids
    client, runs = _mlflow_run(config.output_dir)
    assert len(runs) == 1 and runs[0].info.run_id == ids["mlflow"] and runs[0].info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(ids["mlflow"], "val/loss")] == [1, 2, 3]
    records = wandb_records(run_dir)
    run_ids = {r.run.run_id for r in records if r.WhichOneof("record_type") == "run"}
    assert run_ids == {ids["wandb"]}
    assert sorted(row["epoch"] for row in _wandb_history(records) if "val/loss" in row) == [1, 2, 3]


def test_unreachable_tracking_server_does_not_stop_training(make_config, disease_root, monkeypatch, capsys):
    from plantpheno.reporting import ConsoleReporter

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    config = make_config(data={"root": str(disease_root)},
                         tracking={"backends": ["mlflow", "tensorboard"], "mlflow": {"uri": "http://127.0.0.1:9"},
                                   "system_metrics_interval": 0})
    result = pipeline.train(config, reporter=ConsoleReporter())  # what the command line shows
    err = capsys.readouterr().err
    assert err.count("tracking backend mlflow failed") == 1
    assert json.loads((result.run_dir / "run.json").read_text())["status"] == "completed"
    logged = (result.run_dir / "tracking" / "metrics.jsonl").read_text()
    assert "val/loss" in logged and "test/accuracy" in logged
    assert (result.run_dir / "tensorboard").is_dir()


def test_tracking_leaves_nothing_outside_its_folders(tmp_path, disease_root, write_config):
    work, home, tmp = tmp_path / "work", tmp_path / "home", tmp_path / "tmp"
    for folder in (work, home, tmp):
        folder.mkdir()
    config = write_config(data={"root": str(disease_root)}, output_dir=str(work / "runs"),
                          training={"epochs": 1},
                          tracking={"backends": ["mlflow", "wandb", "tensorboard"], "wandb": {"mode": "offline"}})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "XDG_", "MPLCONFIGDIR"))}
    env.update(HOME=str(home), TMPDIR=str(tmp), HF_HUB_OFFLINE="1", MLFLOW_DISABLE_TELEMETRY="true")
    result = subprocess.run([sys.executable, "-m", "plantpheno", "train", str(config)], cwd=work, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in work.iterdir()) == ["runs"]
    # .cache: the image check memo (see data.images.check_images)
    assert sorted(p.name for p in (work / "runs").iterdir()) == [".cache", "default", "mlartifacts", "mlflow.db"]
    assert "mlflow ui --backend-store-uri sqlite:///" in result.stderr


def test_wandb_mode_is_left_to_wandb_and_a_short_run_has_system_metrics(write_config, disease_root, tmp_path):
    """No W&B settings in the config, WANDB_MODE=offline in the environment and no API key: an offline W&B run.
    The default 10 s sampling interval is longer than this run: samples at the start and at each epoch's end.
    (A new process: W&B reads its environment once per process.)"""
    path = write_config(data={"root": str(disease_root)}, tracking={"backends": ["wandb"]})
    config = load_config(path)
    assert config.tracking.wandb.mode is None and config.tracking.system_metrics_interval == 10
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_API_KEY", "WANDB_MODE")}
    done = subprocess.run([sys.executable, "-m", "plantpheno", "train", str(path)], capture_output=True, text=True,
                          env={**env, "WANDB_MODE": "offline"}, cwd=tmp_path, timeout=600)
    assert done.returncode == 0 and "tracking backend wandb failed" not in done.stderr, done.stderr
    run_dir = tmp_path / "runs" / "default" / "run"
    assert "wandb" in json.loads((run_dir / "run.json").read_text())["tracking"]
    assert len(list(run_dir.glob("wandb/offline-run-*"))) == 1
    history = _wandb_history(wandb_records(run_dir))
    assert [row["epoch"] for row in history if "val/loss" in row] == [1, 2]
    system_steps = [row["global_step"] for row in history if "system/cpu_percent" in row]
    local = [json.loads(line) for line in (run_dir / "tracking" / "metrics.jsonl").read_text().splitlines()]
    local_steps = [m["step"] for m in local if m["key"] == "system/process_rss_gb"]
    final = max(m["step"] for m in local if m["axis"] == "step")
    # the start (step 0), the end of epoch 1, the end of epoch 2 (the last step)
    assert {0, final} <= set(system_steps) and {0, final} <= set(local_steps) and len(set(local_steps)) >= 3
    assert all(m["value"] > 0 for m in local if m["key"] == "system/process_rss_gb")
