"""Where a study lives: a journal file (default; fine on a shared file system) or a database."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from plantpheno.errors import ConfigError

if TYPE_CHECKING:
    import optuna

_RDB_SCHEMES = ("sqlite", "postgresql", "mysql", "oracle", "mssql")


def journal_path(url: str) -> Path | None:
    """The file of a ``journal://PATH`` URL (``journal:///abs/path.log``), else None."""
    return Path(url.removeprefix("journal://")) if url.startswith("journal://") else None


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url``: ``journal://PATH`` or an SQLAlchemy database URL.

    Raises:
        ConfigError: for any other form of URL, or a database that cannot be opened.
    """
    import optuna
    from optuna.storages.journal import JournalFileBackend

    path = journal_path(url)
    if path is not None:
        if not str(path).strip():
            raise ConfigError(f"--storage: got {url!r}; expected journal:///path/to/study.log")
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    scheme = url.partition(":")[0].partition("+")[0]
    if scheme not in _RDB_SCHEMES or "://" not in url:
        raise ConfigError(f"--storage: got {url!r}; expected journal:///path/to/study.log, sqlite:///path/to/study.db "
                          f"or a database URL such as postgresql://user@host/db")
    # sqlite: wait for the write lock instead of failing at once when several workers write
    kwargs = {"connect_args": {"timeout": 60}} if scheme == "sqlite" else {"pool_pre_ping": True}
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        except Exception as exc:  # noqa: BLE001 - SQLAlchemy/driver errors of every kind
            # workers started together on an empty database all create Optuna's tables: the losers of that race
            # see "already exists" / "duplicate key" once, and find the tables made when they try again
            racing = any(s in str(exc).lower() for s in ("already exists", "duplicate key"))
            if not racing or attempt == 4:
                raise ConfigError(f"--storage {url}: cannot open the database ({type(exc).__name__}: "
                                  f"{str(exc)[:500]})") from None
            time.sleep(0.5 + attempt)
    raise AssertionError("unreachable")
