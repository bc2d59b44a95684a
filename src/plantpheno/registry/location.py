"""Where the model registry is: one rule for every command, for auto-registration and for the Python API.

In order, the first that is set wins:

1. an explicit URI (``--registry URI`` on the command line, ``uri=`` in Python);
2. the run's own ``registry.uri``, when a run's config is involved (auto-registration after training,
   ``models register RUN_DIR``) and the config sets it;
3. ``$PLANTPHENO_REGISTRY_URI`` (a team sets it once, e.g. ``http://mlflow.my-lab:5000``);
4. MLflow's own ``$MLFLOW_REGISTRY_URI``, then ``$MLFLOW_TRACKING_URI`` (MLflow's convention: the registry
   is on the tracking server unless told otherwise);
5. the project's registry: ``PROJECT/runs/mlflow.db``, where PROJECT is the nearest folder, from the
   current one upwards, that already holds ``runs/mlflow.db``; else the current folder. With the default
   ``output_dir: runs`` this is also the MLflow store training tracks to, so ``mlflow ui`` shows both.

A run's ``output_dir`` and ``tracking.mlflow.uri`` do not move the registry: a model registered from a tuning
trial (whose output folder is the study's) lands where ``models list`` looks.
"""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

ENV_URI = "PLANTPHENO_REGISTRY_URI"
MLFLOW_ENV_URIS = ("MLFLOW_REGISTRY_URI", "MLFLOW_TRACKING_URI")
PROJECT_STORE = Path("runs") / "mlflow.db"


@dataclass(frozen=True)
class RegistryLocation:
    """A registry URI and why it was chosen (what every registry command prints)."""

    uri: str
    source: str

    def describe(self) -> str:
        return f"registry: {redact(self.uri)} ({self.source})"


def locate_registry(explicit: str | None = None, *, run_uri: str | None = None,
                    cwd: Path | None = None) -> RegistryLocation:
    """The registry to use, and why (see the module docstring for the rule); ``run_uri`` is the ``registry.uri``
    of the run's config, where a run is involved."""
    if explicit:
        return RegistryLocation(explicit, "--registry")
    if run_uri:
        return RegistryLocation(run_uri, "the run's registry.uri")
    for var in (ENV_URI, *MLFLOW_ENV_URIS):
        value = os.environ.get(var, "").strip()
        if value:
            return RegistryLocation(value, f"${var}")
    here = (cwd or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / PROJECT_STORE).is_file():
            return RegistryLocation(sqlite_uri(folder / PROJECT_STORE), f"the project's registry in {folder}")
    return RegistryLocation(sqlite_uri(here / PROJECT_STORE), f"the project's registry in {here}")


def resolve_registry_uri(explicit: str | None = None, *, run_uri: str | None = None,
                         cwd: Path | None = None) -> str:
    """The registry URI every command uses (``locate_registry(...).uri``); the one place that decides it."""
    return locate_registry(explicit, run_uri=run_uri, cwd=cwd).uri


def redact(uri: str) -> str:
    """``uri`` with any password replaced by ``***`` (it goes into messages and logs)."""
    parts = urllib.parse.urlsplit(uri)
    try:
        password = parts.password
    except ValueError:
        return uri
    if password is None:
        return uri
    host = parts.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def sqlite_uri(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


def sqlite_path(uri: str) -> Path | None:
    """The file of a ``sqlite:///PATH`` URI, else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0])
