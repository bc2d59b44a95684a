"""Registry stores that are not what the URI promises (issue 27): a read command wrote MLflow's ~60 tables into an
unrelated SQLite file; a folder, a file that is not a database, a scheme plantpheno cannot use gave tracebacks; a
closed PostgreSQL port was retried silently for 105 s; a read-only store failed deep in a write. Each is now one
message, and nothing is created or changed in the store."""

from __future__ import annotations

import hashlib
import os
import shlex
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_harness import assert_refused, can_mount_tmpfs, in_process


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A real MLflow store (sqlite) with one version of ``leafnet``."""
    from mlflow import MlflowClient

    folder = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("leafnet")
    (folder / "package").mkdir()
    client.create_model_version("leafnet", str(folder / "package"))
    return folder / "mlflow.db"


@pytest.fixture
def other_db(tmp_path) -> Path:
    """Somebody's own SQLite database, nothing to do with MLflow."""
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE plants (name TEXT)")
        db.execute("INSERT INTO plants VALUES ('basil')")
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("command", [("models", "list"), ("models", "show", "leafnet"),
                                     ("models", "promote", "leafnet", "1", "--alias", "champion"),
                                     ("models", "delete", "leafnet/1")])
def test_a_sqlite_file_that_is_not_an_mlflow_store_is_refused_and_left_as_it_was(other_db, command):
    before = _sha(other_db)
    code, _, err = in_process(*command, "--registry", f"sqlite:///{other_db}")
    assert_refused(code, err, "is a SQLite database but not an MLflow store", "plants")
    assert _sha(other_db) == before
    with sqlite3.connect(other_db) as db:
        assert [r[0] for r in db.execute("SELECT name FROM sqlite_master")] == ["plants"]


def test_register_does_not_add_mlflow_tables_to_an_unrelated_database(other_db, tmp_path):
    before = _sha(other_db)
    code, _, err = in_process("models", "register", str(tmp_path), "--name", "leafnet",
                              "--registry", f"sqlite:///{other_db}")
    assert_refused(code, err, "not an MLflow store")
    assert _sha(other_db) == before


@pytest.mark.parametrize("command", [("models", "list"), ("models", "register", "RUN", "--name", "leafnet")])
def test_a_file_that_is_not_a_database_is_refused(tmp_path, command):
    notes = tmp_path / "notes.db"
    notes.write_text("my notes, not a database\n" * 100)
    args = [str(tmp_path) if a == "RUN" else a for a in command]
    code, _, err = in_process(*args, "--registry", f"sqlite:///{notes}")
    assert_refused(code, err, "is not a SQLite database")
    assert notes.read_text() == "my notes, not a database\n" * 100


def test_a_folder_is_refused_by_register_too(tmp_path):
    folder = tmp_path / "registry.db"
    folder.mkdir()
    code, _, err = in_process("models", "register", str(tmp_path), "--name", "leafnet",
                              "--registry", f"sqlite:///{folder}")
    assert_refused(code, err, "is a folder, not a SQLite file")
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("uri", ["ftp://example.org/registry", "s3://bucket/registry", "redis://localhost/0"])
def test_a_scheme_plantpheno_cannot_use_is_refused(uri):
    code, _, err = in_process("models", "list", "--registry", uri)
    assert_refused(code, err, "plantpheno cannot use a", "sqlite:///PATH")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_closed_postgresql_port_fails_in_seconds_not_minutes():
    port = _closed_port()
    start = time.monotonic()
    code, _, err = in_process("models", "list", "--registry", f"postgresql://user:secret@127.0.0.1:{port}/mlflow")
    assert_refused(code, err, "cannot reach the registry", f"127.0.0.1:{port}")
    assert time.monotonic() - start < 5
    assert "secret" not in err  # the password is never echoed


def test_a_server_that_never_answers_gets_a_waiting_line_and_gives_up(monkeypatch):
    from plantpheno.registry import stores

    # a listening socket whose backlog is full: the kernel drops further SYNs, so connecting hangs
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    monkeypatch.setattr(stores, "CONNECT_SECONDS", 2.5)
    try:
        start = time.monotonic()
        code, _, err = in_process("models", "list", "--registry", f"postgresql://127.0.0.1:{port}/mlflow")
        elapsed = time.monotonic() - start
    finally:
        for s in (*fillers, server):
            s.close()
    if code == 2 and "Connection refused" in err:
        pytest.skip("this kernel refuses instead of dropping connections past the backlog")
    assert_refused(code, err, "cannot reach the registry", "within 2 s")
    assert f"waiting for the registry server at 127.0.0.1:{port}" in err
    assert elapsed < 6


def test_a_missing_file_for_a_read_command_is_an_error_and_is_not_created(tmp_path):
    missing = tmp_path / "typo.db"
    code, _, err = in_process("models", "list", "--registry", f"sqlite:///{missing}")
    assert_refused(code, err, "does not exist")
    assert not missing.exists()


def test_a_real_store_still_lists(store):
    code, out, err = in_process("models", "list", "--registry", f"sqlite:///{store}")
    assert code == 0, err
    assert "leafnet" in out


def test_a_read_only_store_is_named_on_promote_delete_and_register(store, tmp_path):
    prefix = can_mount_tmpfs()
    if prefix is None:
        pytest.skip("no mount namespace here for a read-only bind mount")
    folder = store.parent
    uri = f"sqlite:///{store}"
    before = _sha(store)
    commands = [["models", "promote", "leafnet", "1", "--alias", "champion"], ["models", "delete", "leafnet/1"],
                ["models", "register", str(tmp_path), "--name", "leafnet"]]
    py = shlex.quote(sys.executable)
    runs = " ; ".join(f"{py} -m plantpheno {shlex.join(c)} --registry {shlex.quote(uri)} 2>>{tmp_path}/err.txt;"
                      f" echo $? >> {tmp_path}/codes.txt" for c in commands)
    script = (f"mount --bind {shlex.quote(str(folder))} {shlex.quote(str(folder))} && "
              f"mount -o remount,bind,ro {shlex.quote(str(folder))} && {runs}")
    result = subprocess.run([*prefix, "sh", "-c", script], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    codes = (tmp_path / "codes.txt").read_text().split()
    err = (tmp_path / "err.txt").read_text()
    assert codes == ["2", "2", "2"], err
    assert "Traceback" not in err and err.count("is read-only") == 3, err
    assert "read-only filesystem" in err
    assert _sha(store) == before



def test_a_database_uri_without_its_driver_installed_is_named():
    import importlib.util

    if any(importlib.util.find_spec(m) for m in ("pymysql", "MySQLdb")):
        pytest.skip("a MySQL driver is installed here")
    server = socket.socket()  # something listening, so that only the missing driver is wrong
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    try:
        code, _, err = in_process("models", "list", "--registry",
                                  f"mysql://127.0.0.1:{server.getsockname()[1]}/mlflow")
    finally:
        server.close()
    assert_refused(code, err, "no mysql driver is installed", "pip install pymysql")
