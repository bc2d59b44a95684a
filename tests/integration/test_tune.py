"""Hyperparameter studies end to end on tiny synthetic data (test_resnet, 32 px, 1-3 epochs per trial)."""

from __future__ import annotations

import csv
import itertools
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from plantpheno import pipeline
from plantpheno.cli import main
from plantpheno.config import load_config

pytestmark = pytest.mark.slow
QUIET = {"system_metrics_interval": 0}


def _tuning_file(tmp_path: Path, tuning: dict, space: dict) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"tuning": tuning, "space": space}))
    return path


def _rows(study_dir: Path) -> list[dict[str, str]]:
    with (study_dir / "trials.csv").open() as fh:
        return list(csv.DictReader(fh))


def _study(url: str, study: str = "space"):
    import optuna

    from plantpheno.tuning.storage import open_storage

    return optuna.load_study(study_name=study, storage=open_storage(url))


def _trials(url: str, study: str = "space"):
    return _study(url, study).get_trials()


def _metric_values(run_dir: Path, metric: str = "val/macro_f1") -> list[float]:
    return [json.loads(line)[metric] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_grid_runs_every_combination_once_and_failing_trials_do_not_stop_it(write_config, disease_root, tmp_path):
    config = write_config(data={"root": str(disease_root)}, training={"epochs": 1}, tracking=QUIET)
    space = {"model.backbone": ["test_resnet", "no_such_net"], "training.learning_rate": [0.003, 0.01]}
    tuning = _tuning_file(tmp_path, {"sampler": "grid", "pruner": "none"}, space)
    assert main(["tune", str(config), str(tuning)]) == 0
    study_dir = tmp_path / "runs" / "default" / "space"
    rows = _rows(study_dir)
    assert sorted((r["model.backbone"], float(r["training.learning_rate"])) for r in rows) == sorted(
        itertools.product(*space.values()))
    for row in rows:
        if row["model.backbone"] == "test_resnet":
            assert row["state"] == "COMPLETE" and Path(row["run_dir"]).name == f"trial-{int(row['number']):04d}"
            assert float(row["value"]) == max(_metric_values(Path(row["run_dir"])))
        else:
            assert row["state"] == "FAIL" and "no_such_net" in row["error"]
    assert main(["tune", str(config), str(tuning)]) == 0  # a finished study: nothing more to run
    assert len(_rows(study_dir)) == 4


def test_random_search_prunes_and_nests_trial_runs_under_the_study_run(write_config, disease_root, tmp_path):
    from mlflow import MlflowClient

    from plantpheno.tracking.mlflow_backend import default_uri
    from plantpheno.tuning import load_tuning_file, tune

    path = write_config(data={"root": str(disease_root)}, training={"epochs": 2},
                        tracking={"backends": ["mlflow"], "system_metrics_interval": 0})
    # The validation loss has no ties (a macro F1 on 20 images has many). After the first trial each one is pruned
    # when its first-epoch loss is above the median of those before it: about an even chance each, so with 5 of them
    # a run without any pruning is ~3 % likely for whatever numbers the training gives (the test is deterministic)
    tuning = _tuning_file(tmp_path, {"sampler": "random", "pruner": "median", "trials": 6, "startup_trials": 1,
                                     "metric": "val/loss", "direction": "minimize"},
                          {"training.learning_rate": {"type": "float", "low": 1e-6, "high": 3e-2, "log": True}})
    space, settings = load_tuning_file(tuning)
    result = tune(load_config(path), space, settings=settings)
    assert result.counts["COMPLETE"] + result.counts["PRUNED"] == 6 and result.counts["PRUNED"] >= 1
    for row in _rows(result.study_dir):
        status = json.loads((Path(row["run_dir"]) / "run.json").read_text())["status"]
        assert status == {"COMPLETE": "completed", "PRUNED": "pruned"}[row["state"]]
        assert int(row["epochs"]) == (2 if row["state"] == "COMPLETE" else 1)
    client = MlflowClient(default_uri(tmp_path / "runs"))
    experiment = client.get_experiment_by_name("default")
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if r.info.run_name == "space")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.info.run_name for r in children) == [f"trial-{i:04d}" for i in range(6)]
    assert parent.data.metrics["best/val/loss"] == result.best_value
    assert load_config(result.study_dir / "trial-0000" / "config.yaml").tracking.wandb.group == "space"


def test_tpe_with_pruning_and_best_config_retrains_to_the_reported_value(write_config, disease_root, tmp_path,
                                                                        capsys):
    config = write_config(data={"root": str(disease_root)}, training={"epochs": 2}, tracking=QUIET)
    tuning = _tuning_file(tmp_path, {"sampler": "tpe", "pruner": "median", "trials": 5, "startup_trials": 2},
                          {"training.learning_rate": {"type": "float", "low": 1e-4, "high": 3e-2, "log": True},
                           "model.dropout": [0.0, 0.3]})
    assert main(["tune", str(config), str(tuning)]) == 0
    study_dir = tmp_path / "runs" / "default" / "space"
    assert f"train it: plantpheno train {study_dir / 'best_config.yaml'}" in capsys.readouterr().out
    best = json.loads((study_dir / "best.json").read_text())
    assert sum(best["trials"].values()) == 5 and set(best["trials"]) <= {"COMPLETE", "PRUNED"}
    for plot in ("optimization_history", "intermediate_values", "parallel_coordinate"):
        assert (study_dir / f"{plot}.png").stat().st_size > 1000, plot
    assert not (study_dir / "param_importances.png").exists()  # 5 trials rank noise (see the unit test)
    retrained = load_config(study_dir / "best_config.yaml")
    assert retrained.training.learning_rate == best["params"]["training.learning_rate"]
    assert retrained.model.dropout == best["params"]["model.dropout"]
    result = pipeline.train(retrained)
    assert max(_metric_values(result.run_dir)) == best["value"]  # the CPU trainer is deterministic


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_two_worker_processes_share_one_study_without_losing_or_repeating_trials(write_config, disease_root,
                                                                                 tmp_path, kind):
    config = write_config(data={"root": str(disease_root)}, training={"epochs": 1}, tracking=QUIET)
    tuning = _tuning_file(tmp_path, {"sampler": "random", "pruner": "none"},
                          {"training.learning_rate": {"type": "float", "low": 1e-4, "high": 3e-2, "log": True}})
    url = f"journal://{tmp_path / 'shared' / 'study.log'}" if kind == "journal" else f"sqlite:///{tmp_path / 's.db'}"
    assert main(["tune", str(config), str(tuning), "--workers", "2", "--trials", "4", "--storage", url]) == 0
    trials = _trials(url)
    assert [t.number for t in trials] == [0, 1, 2, 3]
    failed = [(t.number, t.state.name, t.system_attrs, t.user_attrs) for t in trials if t.state.name != "COMPLETE"]
    assert not failed, "\n".join(map(str, failed))
    assert len({t.params["training.learning_rate"] for t in trials}) == 4
    assert len({t.user_attrs["run_dir"] for t in trials}) == 4
    assert all(t.user_attrs["plantpheno:worker"]["pid"] for t in trials)
    assert len(_rows(tmp_path / "runs" / "default" / "space")) == 4


def test_a_killed_worker_is_resumed_by_running_the_same_command_again(write_config, disease_root, tmp_path):
    config = write_config(data={"root": str(disease_root)}, training={"epochs": 3}, tracking=QUIET)
    tuning = _tuning_file(tmp_path, {"sampler": "random", "pruner": "none", "trials": 2},
                          {"training.learning_rate": {"type": "float", "low": 1e-4, "high": 3e-2, "log": True}})
    study_dir = tmp_path / "runs" / "default" / "space"
    first_epoch = study_dir / "trial-0000" / "metrics.jsonl"
    with (tmp_path / "worker.log").open("w") as log:
        worker = subprocess.Popen([sys.executable, "-m", "plantpheno", "tune", str(config), str(tuning)],
                                  stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 180
        while not (first_epoch.is_file() and first_epoch.read_text().strip()):
            assert worker.poll() is None and time.time() < deadline, (tmp_path / "worker.log").read_text()
            time.sleep(0.05)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    assert json.loads((study_dir / "trial-0000" / "run.json").read_text())["status"] == "running"

    assert main(["tune", str(config), str(tuning)]) == 0
    from plantpheno.tuning.queue import trial_error

    study = _study(f"journal://{study_dir / 'study.log'}")
    trials = study.get_trials()
    assert trials[0].state.name == "FAIL" and "ended while the trial was running" in trial_error(study, trials[0])
    assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials) == 2
    retry = next(t for t in trials if t.user_attrs.get("retry_of") == 0)
    assert retry.state.name == "COMPLETE" and retry.params == trials[0].params
    rows = {r["number"]: r for r in _rows(study_dir)}
    assert f"retried as trial {retry.number}" in rows["0"]["error"]


def test_trials_never_touch_the_test_split_and_a_best_trial_at_chance_is_called_so(write_config, disease_root,
                                                                                   tmp_path, capsys):
    from mlflow import MlflowClient

    from plantpheno.tracking.mlflow_backend import default_uri

    # learning rates far too small for 1 epoch: every trial stays at chance; registry.name is set to show that a
    # trial registers nothing (only the run retrained from best_config.yaml may)
    config = write_config(data={"root": str(disease_root)}, training={"epochs": 1},
                          tracking={"backends": ["mlflow"], "system_metrics_interval": 0},
                          registry={"name": "tuned", "alias": "candidate"})
    tuning = _tuning_file(tmp_path, {"sampler": "grid", "pruner": "none",
                                     "storage": f"sqlite:///{tmp_path / 'optuna.db'}"},
                          {"training.learning_rate": [1e-7, 2e-7], "model.dropout": [0.0]})
    assert main(["tune", str(config), str(tuning)]) == 0
    out = capsys.readouterr().out
    study_dir = tmp_path / "runs" / "default" / "space"
    trial_dirs = sorted(study_dir.glob("trial-*"))
    assert len(trial_dirs) == 2
    for run_dir in trial_dirs:
        assert (run_dir / "eval" / "val" / "metrics.json").is_file()
        assert not (run_dir / "eval" / "test").exists(), run_dir
        assert set(json.loads((run_dir / "run.json").read_text())["evaluation"]) == {"val"}
        assert "registered" not in json.loads((run_dir / "run.json").read_text())
    local = [json.loads(line)["key"] for path in study_dir.rglob("*.jsonl") for line in path.read_text().splitlines()
             if '"key"' in line]
    assert local and not [k for k in local if k.startswith("test/")]
    client = MlflowClient(default_uri(tmp_path / "runs"))
    runs = client.search_runs([client.get_experiment_by_name("default").experiment_id])
    assert len(runs) == 3 and all(r.data.metrics for r in runs)  # the study's run and its 2 trials
    assert not [k for r in runs for k in r.data.metrics if k.startswith("test/")]
    assert any(k.startswith("eval_val/") for r in runs for k in r.data.metrics)
    assert not client.search_registered_models()
    # the best trial is no better than the class frequencies on validation: the study says so, file and console
    best = json.loads((study_dir / "best.json").read_text())
    assert best["baseline"]["split"] == "val" and best["baseline"]["verdict"] != "better"
    assert "WARNING: the best trial" in out and "against the majority class baseline" in out
    # 2 complete trials and 1 varied parameter: no importance plot, and the reason
    assert not (study_dir / "param_importances.png").exists()
    assert "param_importances.png left out: parameter importances need at least 10 complete trials" in out
