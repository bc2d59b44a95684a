"""Checks on a registry store before plantpheno (or MLflow under it) touches it, each ending in one clear message.

MLflow, given a URI, does what it can with it: an unrelated SQLite file gets its ~60 tables added (even by a
read command), a folder or a file that is not a database ends in a SQLAlchemy traceback, a closed PostgreSQL port
is retried silently for 105 s, a read-only store fails deep in a write. So before a registry is opened:

- the scheme must be one plantpheno can use (:data:`SCHEMES`);
- a ``sqlite:///PATH`` must be a file (not a folder) that is a SQLite database holding MLflow's tables (or an
  empty file, or none yet for a command that registers); nothing is created or migrated there by a read;
- a server (``postgresql://``, ``mysql://``, ``mssql://``, ``http(s)://``) must accept a TCP connection within
  :data:`CONNECT_SECONDS`, with a line while it waits;
- a command that writes (register, promote, delete) needs a store it can write: a read-only file, folder or
  filesystem is named as such.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from plantpheno.errors import RegistryError
from plantpheno.registry.location import redact, sqlite_path

# what plantpheno can use: MLflow's database stores (SQLAlchemy URLs, with an optional +driver), its tracking
# server, Databricks, and a local folder (MLflow's file store)
SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks", "databricks-uc", "file")
_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433, "http": 80, "https": 443}
# the drivers MLflow / SQLAlchemy use for a URI without ``+driver`` (any one of them will do)
_DRIVERS = {"postgresql": ("psycopg2", "psycopg"), "mysql": ("pymysql", "MySQLdb"), "mssql": ("pyodbc", "pymssql")}
_MLFLOW_TABLES = {"alembic_version", "experiments", "registered_models", "model_versions"}
CONNECT_SECONDS = 10.0
_PATIENCE = 1.0  # a connection that takes longer than this gets a line saying what it waits for

Say = Callable[[str], None]


def check_store(uri: str, *, say: Say | None = None) -> None:
    """Refuse a registry URI plantpheno cannot use, or a store that is not a registry (see the module docstring).

    Raises:
        RegistryError: naming the URI (credentials hidden) and what is wrong with it.
    """
    scheme = _scheme(uri)
    if scheme not in SCHEMES:
        raise RegistryError(f"registry {redact(uri)}: plantpheno cannot use a {scheme!r} URI; use sqlite:///PATH "
                            f"(a local file), postgresql://, mysql:// or mssql:// (a database), http(s):// (an "
                            f"MLflow server), databricks, or a folder")
    path = sqlite_path(uri)
    if path is not None:
        _check_sqlite(uri, path)
    elif scheme in _DEFAULT_PORTS:
        _check_reachable(uri, scheme, say or logging.getLogger("plantpheno").warning)
        _check_driver(uri, scheme)


def check_writable(uri: str) -> None:
    """Refuse a command that writes (register, promote, delete) on a local store it cannot write.

    Raises:
        RegistryError: naming the store and why it is read-only.
    """
    path = sqlite_path(uri)
    if path is None:
        return  # a server answers for itself (its own message, through MLflow)
    folder = path.parent if path.parent.exists() else None
    why = None
    if folder is not None and _read_only_mount(folder):
        why = f"{folder} is on a read-only filesystem"
    elif path.exists() and not os.access(path, os.W_OK):
        why = f"{path} is not writable (permission denied)"
    elif folder is not None and not os.access(folder, os.W_OK | os.X_OK):
        why = f"its folder {folder} is not writable (SQLite writes a journal beside the file)"
    if why is not None:
        raise RegistryError(f"registry {redact(uri)} is read-only: {why}; register, promote and delete need a "
                            f"store they can write (ask its owner, or use --registry with another store)")


def read_only_error(uri: str, exc: BaseException) -> RegistryError | None:
    """The message for a write the store refused as read-only (found only when writing), else None."""
    text = str(exc).lower()
    if "readonly" in text or "read-only" in text or "read only" in text:
        return RegistryError(f"registry {redact(uri)} is read-only ({str(exc).splitlines()[0][:200]}); register, "
                             f"promote and delete need a store they can write")
    return None


def _scheme(uri: str) -> str:
    if "://" not in uri:
        return "sqlite" if uri.startswith("sqlite:") else "file"  # a bare path is a folder (MLflow's file store)
    return uri.split("://", 1)[0].split("+", 1)[0].lower()


def _check_sqlite(uri: str, path: Path) -> None:
    if path.is_dir():
        raise RegistryError(f"registry {uri}: {path} is a folder, not a SQLite file; name the file "
                            f"(e.g. sqlite:///{path / 'mlflow.db'})")
    if not path.exists():
        return  # reading: an empty registry (check_registry_exists names a mistyped one); registering creates it
    if not path.is_file():
        raise RegistryError(f"registry {uri}: {path} is not a regular file (a FIFO or a device)")
    try:
        with sqlite3.connect(f"file:{urllib.parse.quote(str(path))}?mode=ro", uri=True, timeout=10) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        raise RegistryError(f"registry {uri}: {path} is not a SQLite database ({exc}); name an MLflow store "
                            f"(its runs/mlflow.db) or a new file") from None
    if tables and not _MLFLOW_TABLES <= tables:
        shown = ", ".join(sorted(tables)[:6]) + (f", ... ({len(tables)} in all)" if len(tables) > 6 else "")
        raise RegistryError(f"registry {uri}: {path} is a SQLite database but not an MLflow store (its tables: "
                            f"{shown}); plantpheno does not add MLflow's tables to it. Name an MLflow store or a new "
                            f"file")


def _check_reachable(uri: str, scheme: str, say: Say) -> None:
    """A TCP connection to the server's host and port, within :data:`CONNECT_SECONDS` (MLflow would retry for
    minutes without a word)."""
    parts = urllib.parse.urlsplit(uri)
    try:
        host, port = parts.hostname, parts.port or _DEFAULT_PORTS[scheme]
    except ValueError as exc:  # a port that is not a number
        raise RegistryError(f"registry {redact(uri)}: {exc}") from None
    if not host:
        return  # a socket path or a driver's own notation: the driver reports
    start, said = time.monotonic(), False
    while True:
        left = CONNECT_SECONDS - (time.monotonic() - start)
        try:
            with socket.create_connection((host, port), timeout=min(_PATIENCE, max(left, 0.1))):
                return
        except TimeoutError:
            if time.monotonic() - start >= CONNECT_SECONDS:
                why = f"no answer from {host}:{port} within {CONNECT_SECONDS:.0f} s"
                break
            if not said:
                say(f"waiting for the registry server at {host}:{port} (up to {CONNECT_SECONDS:.0f} s)...")
                said = True
        except OSError as exc:
            why = f"{host}:{port}: {exc.strerror or exc}"
            break
    raise RegistryError(f"cannot reach the registry at {redact(uri)} ({why}); is the server running, and are the "
                        f"host and port right?")


def _check_driver(uri: str, scheme: str) -> None:
    """A database URI without ``+driver`` needs one of the Python drivers it can use (a named driver is left to
    SQLAlchemy, whose module names differ from the driver names)."""
    if scheme not in _DRIVERS or "+" in uri.split("://", 1)[0]:
        return
    import importlib.util

    if not any(importlib.util.find_spec(module) is not None for module in _DRIVERS[scheme]):
        raise RegistryError(f"registry {redact(uri)}: no {scheme} driver is installed (one of "
                            f"{', '.join(_DRIVERS[scheme])}; e.g. pip install {_DRIVERS[scheme][0]})")


def _read_only_mount(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # no statvfs (Windows): the write itself reports
        return False
