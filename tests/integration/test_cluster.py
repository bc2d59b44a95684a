"""The several-machines recipe of the README, on one machine: a real PostgreSQL server as the Optuna storage and a
real ``mlflow server`` (on the same PostgreSQL) as the tracking and registry URI, shared by three ``plantpheno
tune`` processes started separately. Both servers listen on 127.0.0.1 only and are stopped at the end.

PostgreSQL comes from Debian's ``postgresql`` package (``.ci/run`` and ``make postgres`` install it when missing);
without it this test is skipped with that reason, except under CI, where it fails.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import ISOLATED_VARS, stop_process_group, tiny_config

pytestmark = pytest.mark.slow
TRIALS = 5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bindir() -> Path | None:
    """Debian keeps the server programs in /usr/lib/postgresql/<major>/bin (not on PATH)."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    return Path(versions[-1]).parent if versions else None


def _missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must provide it (.ci/run installs Debian's postgresql)")
    pytest.skip(f"{reason} (install Debian's postgresql: `make postgres`, as root)")


@dataclass(frozen=True)
class Postgres:
    port: int
    base: Path

    def url(self, database: str) -> str:
        return f"postgresql://plantpheno@127.0.0.1:{self.port}/{database}"


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    """A throw-away PostgreSQL server on 127.0.0.1, run as a non-root user, with databases optuna and mlflow."""
    bindir = _pg_bindir()
    if bindir is None:
        _missing("PostgreSQL server programs (initdb, pg_ctl) are not installed")
    as_user: list[str] = []
    base = Path(tempfile.mkdtemp(prefix="plantpheno-pg-"))  # /tmp: reachable by the postgres user
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            _missing("no 'postgres' user to run the server as")
        os.chmod(base, 0o755)
        os.chown(base, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = base / "data", _free_port()
    try:
        subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "plantpheno", "--auth=trust",
                        "-E", "UTF8", "--no-sync"], check=True, capture_output=True, text=True, timeout=300)
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"), "-w",
                        "-t", "120", "-o", f"-h 127.0.0.1 -p {port} -k {base}", "start"], check=True,
                       capture_output=True, text=True, timeout=180)
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=port, user="plantpheno", dbname="postgres",
                             autocommit=True) as db:
            db.execute("CREATE DATABASE optuna")
            db.execute("CREATE DATABASE mlflow")
        yield Postgres(port, base)
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True, timeout=120)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def mlflow_server(postgres: Postgres, tmp_path_factory) -> Iterator[str]:
    """``mlflow server`` on 127.0.0.1 with its runs and registry in PostgreSQL and artifacts proxied to a folder."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    with (folder / "server.log").open("w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
             "--backend-store-uri", postgres.url("mlflow"), "--artifacts-destination", (folder / "artifacts").as_uri()],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 600  # imports and ~50 schema migrations: 1-2 minutes on 2 busy cores
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None and time.time() < deadline, (folder / "server.log").read_text()[-3000:]
            time.sleep(1)
        yield uri
    finally:
        stop_process_group(server, timeout=60)


def test_three_tune_processes_share_a_postgres_study_and_an_mlflow_server(postgres, mlflow_server, disease_root,
                                                                         tmp_path):
    import optuna
    from mlflow import MlflowClient

    project = tmp_path / "project"
    project.mkdir()
    config = project / "leaf.yaml"
    config.write_text(yaml.safe_dump(tiny_config(
        project, data={"root": str(disease_root)}, training={"epochs": 3, "threads": 1},
        tracking={"backends": ["mlflow"], "system_metrics_interval": 0}, registry={"name": "leafnet"})))
    space = project / "space.yaml"
    space.write_text(yaml.safe_dump({"tuning": {"sampler": "random", "pruner": "none"}, "space": {
        "training.learning_rate": {"type": "float", "low": 1e-4, "high": 3e-2, "log": True}}}))
    storage = postgres.url("optuna")
    # what each machine of the recipe sets: MLflow's own variable, for tracking and (by MLflow's rule) the registry
    env = {k: v for k, v in os.environ.items() if k not in ISOLATED_VARS}
    env["MLFLOW_TRACKING_URI"] = mlflow_server
    command = [sys.executable, "-m", "plantpheno", "tune", str(config), str(space), "--storage", storage,
               "--trials", str(TRIALS), "training.epochs=1"]
    logs = [project / f"worker{i}.log" for i in range(3)]
    workers = []
    for log in logs:
        with log.open("w") as fh:
            workers.append(subprocess.Popen(command, cwd=project, env=env, stdout=fh, stderr=subprocess.STDOUT))
    codes = [w.wait(timeout=1500) for w in workers]
    assert codes == [0, 0, 0], "\n".join(log.read_text()[-3000:] for log in logs)

    study = optuna.load_study(study_name="space", storage=storage)
    trials = study.get_trials()
    assert [t.number for t in trials] == list(range(TRIALS))
    assert all(t.state.name == "COMPLETE" for t in trials), [(t.number, t.user_attrs) for t in trials]
    assert len({t.params["training.learning_rate"] for t in trials}) == TRIALS
    pids = {t.user_attrs["plantpheno:worker"]["pid"] for t in trials}
    assert pids <= {w.pid for w in workers} and len(pids) >= 2, pids  # trials were shared out
    study_dir = project / "runs" / "default" / "space"
    assert sorted(p.name for p in study_dir.glob("trial-*")) == [f"trial-{i:04d}" for i in range(TRIALS)]
    statuses = [json.loads((study_dir / f"trial-{i:04d}" / "run.json").read_text()) for i in range(TRIALS)]
    assert all(s["status"] == "completed" and s["epochs"] == 1 for s in statuses)  # the override counted
    # a trial is evaluated on validation only and registers nothing: the run retrained from best_config.yaml does
    assert not [s["registered"] for s in statuses if "registered" in s]

    client = MlflowClient(tracking_uri=mlflow_server)
    runs = client.search_runs([client.get_experiment_by_name("default").experiment_id])
    names = sorted(r.info.run_name for r in runs if r.info.run_name.startswith("trial-"))
    assert names == [f"trial-{i:04d}" for i in range(TRIALS)]  # none ran twice
    parents = {r.info.run_id for r in runs if r.info.run_name == "space"}
    assert len(parents) == 1 and all(r.data.tags.get("mlflow.parentRunId") in parents for r in runs
                                     if r.info.run_name.startswith("trial-"))

    # the registry commands find the team's server with nothing but that variable set: a user registers two trials'
    # runs (with --force: a trial is evaluated on validation only, so it has no test verdict) and promotes one
    for trial in ("trial-0000", "trial-0001"):
        registered = subprocess.run([sys.executable, "-m", "plantpheno", "models", "register", str(study_dir / trial),
                                     "--name", "leafnet", "--force"], cwd=project, env=env, capture_output=True,
                                    text=True, timeout=300)
        assert registered.returncode == 0, registered.stderr
    listed = subprocess.run([sys.executable, "-m", "plantpheno", "models", "list", "leafnet", "--json"], cwd=project,
                            env=env, capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0, listed.stderr
    assert f"registry: {mlflow_server} ($MLFLOW_TRACKING_URI)" in listed.stderr
    assert sorted(json.loads(line)["version"] for line in listed.stdout.splitlines()) == [1, 2]
    promoted = subprocess.run([sys.executable, "-m", "plantpheno", "models", "promote", "leafnet", "2", "--alias",
                               "champion", "--force"], cwd=project, env=env, capture_output=True, text=True,
                              timeout=300)
    assert promoted.returncode == 0 and "leafnet@champion -> version 2" in promoted.stdout, promoted.stderr
    assert client.get_model_version_by_alias("leafnet", "champion").version in (2, "2")

    # the study is resumable: the same command runs nothing more; with a larger budget, only the new trial runs
    before = {p: p.stat().st_mtime_ns for p in study_dir.glob("trial-*/run.json")}
    again = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(optuna.load_study(study_name="space", storage=storage).get_trials()) == TRIALS
    more = subprocess.run([*command[:-2], str(TRIALS + 1), "training.epochs=1"], cwd=project, env=env,
                          capture_output=True, text=True, timeout=900)
    assert more.returncode == 0, more.stderr[-3000:]
    trials = optuna.load_study(study_name="space", storage=storage).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * (TRIALS + 1)
    assert {p: p.stat().st_mtime_ns for p in before} == before
