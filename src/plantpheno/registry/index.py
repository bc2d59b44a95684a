"""Fast access to an MLflow Model Registry: read versions, tags and aliases, move an alias, fetch package files.

Importing ``mlflow`` takes 3 s of CPU (9-11 s wall on the shared 2-core machine: it pulls in pandas, FastAPI and
its GenAI modules), longer than a ``models list`` should take in all. So the registry commands talk to the
registry the way MLflow's own client does underneath, without importing it:

- ``sqlite:///PATH``: the tables of MLflow's SQLAlchemy store, read with :mod:`sqlite3` (read-only; a missing
  file is never created). The columns used are checked first; an unknown schema, or MLflow workspaces switched
  on, fall back to MLflow's client. Versions MLflow marks deleted (``current_stage = 'Deleted_Internal'``) are
  skipped as MLflow skips them; an alias is set with the same upsert MLflow's store does.
- ``http(s)://``: MLflow's REST API (``/api/2.0/mlflow/...``) with MLflow's own environment variables for
  credentials (``MLFLOW_TRACKING_TOKEN``, ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``,
  ``MLFLOW_TRACKING_INSECURE_TLS``); package files through the server's artifact proxy.
- anything else (``databricks``, custom auth plugins, client certificates): MLflow's client.

Registering a new version (artifact upload) and deleting go through MLflow's client in every case.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import sqlite3
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from plantpheno.errors import RegistryError
from plantpheno.registry.location import sqlite_path

DELETED_STAGE = "Deleted_Internal"  # MLflow's soft delete of a model version
_PAGE = 1000


@dataclass(frozen=True)
class VersionRecord:
    """One registered model version as stored (aliases are kept per model, see :meth:`RegistryIndex.aliases`)."""

    name: str
    version: int
    source: str
    tags: dict[str, str] = field(default_factory=dict)
    created: float = 0.0  # seconds since the epoch
    description: str = ""
    run_id: str = ""


class RegistryIndex(Protocol):
    """What the registry commands read and the one write they do without MLflow's client."""

    exists: bool  # False: nothing was ever registered here (no store yet)

    def versions(self, name: str | None = None) -> list[VersionRecord]:
        """Live versions of one model (or of all), by name then version."""
        ...

    def model_names(self) -> list[str]: ...

    def aliases(self, name: str | None = None) -> dict[str, dict[str, int]]:
        """model name -> {alias: version}."""
        ...

    def set_alias(self, name: str, alias: str, version: int) -> None: ...

    def fetch(self, source: str, dst: Path, *, only: str | None = None) -> Path:
        """Copy a version's package folder (or the one file ``only``) under ``dst``; return the folder."""
        ...


def open_index(uri: str) -> RegistryIndex:
    """The fastest correct way to the registry at ``uri``."""
    workspaces = os.environ.get("MLFLOW_WORKSPACE") or os.environ.get("MLFLOW_ENABLE_WORKSPACES", "").lower() in (
        "1", "true")
    path = sqlite_path(uri)
    if path is not None and not workspaces:
        index = SqliteIndex(path)
        if index.compatible:
            return index
    if uri.startswith(("http://", "https://")) and not workspaces and RestIndex.supported():
        return RestIndex(uri)
    return MlflowIndex(uri)


# ----------------------------------------------------------------------------------------------
# sqlite
# ----------------------------------------------------------------------------------------------

_COLUMNS = {"registered_models": {"name"},
            "model_versions": {"name", "version", "creation_time", "description", "current_stage", "source",
                               "run_id"},
            "model_version_tags": {"key", "value", "name", "version"},
            "registered_model_aliases": {"alias", "version", "name"}}


class SqliteIndex:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.exists = path.is_file()
        self.workspace = False
        self.compatible = True
        if self.exists:
            with self._connect() as db:
                tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                if not tables:  # an empty file (e.g. created by a tool that failed): nothing registered
                    self.exists = False
                    return
                columns = {t: {row[1] for row in db.execute(f"PRAGMA table_info({t})")} for t in _COLUMNS
                           if t in tables}
            self.compatible = all(t in columns and need <= columns[t] for t, need in _COLUMNS.items())
            self.workspace = self.compatible and "workspace" in columns["model_versions"]

    def _connect(self, *, write: bool = False) -> sqlite3.Connection:
        mode = "rw" if write else "ro"
        return sqlite3.connect(f"file:{urllib.parse.quote(str(self.path))}?mode={mode}", uri=True, timeout=60)

    def _where(self, alias: str = "") -> str:
        return f" AND {alias}workspace = 'default'" if self.workspace else ""

    def versions(self, name: str | None = None) -> list[VersionRecord]:
        if not self.exists:
            return []
        named = " AND v.name = ?" if name is not None else ""
        args: tuple[Any, ...] = (DELETED_STAGE, name) if name is not None else (DELETED_STAGE,)
        with self._connect() as db:
            rows = db.execute("SELECT v.name, v.version, v.source, v.creation_time, v.description, v.run_id "
                              "FROM model_versions v WHERE (v.current_stage IS NULL OR v.current_stage != ?)"
                              f"{named}{self._where('v.')} ORDER BY v.name, v.version", args).fetchall()
            tags: dict[tuple[str, int], dict[str, str]] = {}
            tag_rows = db.execute("SELECT name, version, key, value FROM model_version_tags WHERE 1 = 1"
                                  + (" AND name = ?" if name is not None else "") + self._where(),
                                  (name,) if name is not None else ()).fetchall()
        for model, version, key, value in tag_rows:
            tags.setdefault((model, int(version)), {})[key] = value or ""
        return [VersionRecord(n, int(v), s or "", tags.get((n, int(v)), {}), (c or 0) / 1000, d or "", r or "")
                for n, v, s, c, d, r in rows]

    def model_names(self) -> list[str]:
        if not self.exists:
            return []
        with self._connect() as db:
            return [r[0] for r in db.execute(f"SELECT name FROM registered_models WHERE 1 = 1{self._where()} "
                                             "ORDER BY name")]

    def aliases(self, name: str | None = None) -> dict[str, dict[str, int]]:
        if not self.exists:
            return {}
        named = " AND name = ?" if name is not None else ""
        with self._connect() as db:
            rows = db.execute(f"SELECT name, alias, version FROM registered_model_aliases WHERE 1 = 1{named}"
                              f"{self._where()}", (name,) if name is not None else ()).fetchall()
        out: dict[str, dict[str, int]] = {}
        for model, alias, version in rows:
            out.setdefault(model, {})[alias] = int(version)
        return out

    def set_alias(self, name: str, alias: str, version: int) -> None:
        # MLflow's store merges (upserts) one alias row: a single statement, so the alias never points at two
        # versions, and readers see the old or the new version
        columns, values = "alias, version, name", [alias, version, name]
        if self.workspace:
            columns, values = columns + ", workspace", [*values, "default"]
        with self._connect(write=True) as db:
            db.execute(f"INSERT OR REPLACE INTO registered_model_aliases ({columns}) VALUES "
                       f"({', '.join('?' * len(values))})", values)

    def fetch(self, source: str, dst: Path, *, only: str | None = None) -> Path:
        return fetch_local_or_mlflow(source, dst, only=only, tracking_uri=f"sqlite:///{self.path}")


# ----------------------------------------------------------------------------------------------
# MLflow's REST API
# ----------------------------------------------------------------------------------------------


class RestIndex:
    exists = True

    def __init__(self, uri: str) -> None:
        self.uri = uri.rstrip("/")
        self.timeout = float(os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", "120"))

    @staticmethod
    def supported() -> bool:
        """Credentials this client can send; others (auth plugins, client certificates) need MLflow's client."""
        return not any(os.environ.get(v) for v in ("MLFLOW_TRACKING_AUTH", "MLFLOW_TRACKING_CLIENT_CERT_PATH",
                                                   "MLFLOW_TRACKING_SERVER_CERT_PATH", "MLFLOW_TRACKING_AWS_SIGV4"))

    def _request(self, method: str, path: str, *, query: dict[str, Any] | None = None,
                 body: dict[str, Any] | None = None, raw: bool = False) -> Any:
        url = f"{self.uri}/{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        request = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode())
        request.add_header("Content-Type", "application/json")
        token, user = os.environ.get("MLFLOW_TRACKING_TOKEN"), os.environ.get("MLFLOW_TRACKING_USERNAME")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        elif user:
            secret = base64.b64encode(f"{user}:{os.environ.get('MLFLOW_TRACKING_PASSWORD', '')}".encode()).decode()
            request.add_header("Authorization", f"Basic {secret}")
        context = None
        if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() in ("1", "true"):
            import ssl

            context = ssl._create_unverified_context()  # noqa: S323 - the user asked for it, as MLflow allows
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=context) as response:  # noqa: S310
                data = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")
            try:
                detail = json.loads(detail).get("message", detail)
            except ValueError:
                pass
            raise RegistryError(f"registry {self.uri}: {method} {path} failed with HTTP {exc.code}: "
                                f"{detail[:500]}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise RegistryError(f"cannot reach the registry at {self.uri} ({getattr(exc, 'reason', exc)}); "
                                f"is the MLflow server running?") from None
        return data if raw else json.loads(data or b"{}")

    def _pages(self, path: str, key: str, query: dict[str, Any]) -> list[dict[str, Any]]:
        out, token = [], None
        while True:
            page = self._request("GET", path, query={**query, "max_results": _PAGE,
                                                     **({"page_token": token} if token else {})})
            out += page.get(key, [])
            token = page.get("next_page_token")
            if not token:
                return out

    def versions(self, name: str | None = None) -> list[VersionRecord]:
        query = {"filter": f"name = '{name}'"} if name is not None else {}
        found = self._pages("api/2.0/mlflow/model-versions/search", "model_versions", query)
        records = [VersionRecord(v["name"], int(v["version"]), v.get("source", ""),
                                 {t["key"]: t.get("value", "") for t in v.get("tags", [])},
                                 int(v.get("creation_timestamp", 0)) / 1000, v.get("description", ""),
                                 v.get("run_id", "")) for v in found]
        return sorted(records, key=lambda r: (r.name, r.version))

    def model_names(self) -> list[str]:
        return sorted(m["name"] for m in self._pages("api/2.0/mlflow/registered-models/search",
                                                      "registered_models", {}))

    def aliases(self, name: str | None = None) -> dict[str, dict[str, int]]:
        if name is not None:
            try:
                models = [self._request("GET", "api/2.0/mlflow/registered-models/get",
                                        query={"name": name})["registered_model"]]
            except RegistryError as exc:
                if "HTTP 404" in str(exc):
                    return {}
                raise
        else:
            models = self._pages("api/2.0/mlflow/registered-models/search", "registered_models", {})
        return {m["name"]: {a["alias"]: int(a["version"]) for a in m.get("aliases", [])} for m in models}

    def set_alias(self, name: str, alias: str, version: int) -> None:
        self._request("POST", "api/2.0/mlflow/registered-models/alias",
                      body={"name": name, "alias": alias, "version": str(version)})

    def fetch(self, source: str, dst: Path, *, only: str | None = None) -> Path:
        path = _proxied_artifact_path(source)
        if path is None:
            return fetch_local_or_mlflow(source, dst, only=only, tracking_uri=self.uri)
        folder = dst / Path(path).name
        folder.mkdir(parents=True, exist_ok=True)
        names = [only] if only is not None else self._list(path)
        for rel in names:
            data = self._request("GET", f"api/2.0/mlflow-artifacts/artifacts/{urllib.parse.quote(f'{path}/{rel}')}",
                                 raw=True)
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_bytes(data)
        return folder

    def _list(self, path: str, prefix: str = "") -> list[str]:
        listing = self._request("GET", "api/2.0/mlflow-artifacts/artifacts", query={"path": f"{path}/{prefix}"
                                                                                   if prefix else path})
        out = []
        for item in listing.get("files", []):
            rel = f"{prefix}{Path(item['path']).name}"
            out += self._list(path, rel + "/") if item.get("is_dir") else [rel]
        return out


def _proxied_artifact_path(source: str) -> str | None:
    """``mlflow-artifacts:/1/abc/artifacts/model`` (or ``mlflow-artifacts://host:port/...``) -> ``1/abc/...``."""
    if not source.startswith("mlflow-artifacts:"):
        return None
    parsed = urllib.parse.urlparse(source)
    return parsed.path.lstrip("/")


# ----------------------------------------------------------------------------------------------
# MLflow's client (slow to import; every other case)
# ----------------------------------------------------------------------------------------------


class MlflowIndex:
    exists = True

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.client = mlflow_client(uri)

    def versions(self, name: str | None = None) -> list[VersionRecord]:
        found, token = [], None
        while True:
            page = self.client.search_model_versions(f"name='{name}'" if name is not None else None,
                                                     max_results=_PAGE, page_token=token)
            found += list(page)
            token = page.token
            if not token:
                break
        records = [VersionRecord(v.name, int(v.version), v.source or "", dict(v.tags or {}),
                                 (v.creation_timestamp or 0) / 1000, v.description or "", v.run_id or "")
                   for v in found]
        return sorted(records, key=lambda r: (r.name, r.version))

    def _models(self) -> list[Any]:
        found, token = [], None
        while True:
            page = self.client.search_registered_models(max_results=_PAGE, page_token=token)
            found += list(page)
            token = page.token
            if not token:
                return found

    def model_names(self) -> list[str]:
        return sorted(m.name for m in self._models())

    def aliases(self, name: str | None = None) -> dict[str, dict[str, int]]:
        from mlflow.exceptions import MlflowException

        if name is not None:
            try:
                models = [self.client.get_registered_model(name)]
            except MlflowException:
                return {}
        else:
            models = self._models()
        return {m.name: {a: int(v) for a, v in (m.aliases or {}).items()} for m in models}

    def set_alias(self, name: str, alias: str, version: int) -> None:
        self.client.set_registered_model_alias(name, alias, str(version))

    def fetch(self, source: str, dst: Path, *, only: str | None = None) -> Path:
        return fetch_local_or_mlflow(source, dst, only=only, tracking_uri=self.uri)


def mlflow_client(uri: str) -> Any:
    from plantpheno.tracking.mlflow_backend import quiet_mlflow

    quiet_mlflow()  # our commands print their own lines
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def fetch_local_or_mlflow(source: str, dst: Path, *, only: str | None, tracking_uri: str) -> Path:
    """A ``file://`` package is copied as is; any other kind of source is downloaded by MLflow."""
    parsed = urllib.parse.urlparse(source)
    local = Path(urllib.parse.unquote(parsed.path)) if parsed.scheme == "file" else (
        Path(source) if not parsed.scheme else None)
    if local is not None:
        if not local.is_dir():
            raise RegistryError(f"the registered package folder {local} is missing (was the artifact store moved "
                                f"or deleted?)")
        folder = dst / local.name
        if only is not None:
            (folder / only).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local / only, folder / only)
        else:
            shutil.copytree(local, folder, dirs_exist_ok=True)
        return folder
    from plantpheno.tracking.mlflow_backend import quiet_mlflow

    quiet_mlflow()  # no download bars in our output
    import mlflow

    if only is None:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(dst),
                                                        tracking_uri=tracking_uri))
    target = dst / Path(only).parent  # so that the returned folder / only is the file
    target.mkdir(parents=True, exist_ok=True)
    mlflow.artifacts.download_artifacts(artifact_uri=f"{source.rstrip('/')}/{only}", dst_path=str(target),
                                        tracking_uri=tracking_uri)
    return dst
