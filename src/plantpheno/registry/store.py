"""The model registry: MLflow's Model Registry (the project's sqlite store by default, a team's server when set).

plantpheno adds on top: one rule for where the registry is (:func:`resolve_registry_uri`), a self-contained
package per version (weights as safetensors, preprocessing, class names, model card), lineage tags,
validated names, a check that a new version does the same job as the name's latest, and retries so that
several processes can register the same name at once without losing a version. Reading and moving aliases
do not import MLflow (:mod:`plantpheno.registry.index`), so they take a fraction of a second.
"""

from __future__ import annotations

import contextlib
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from plantpheno.errors import RegistryError
from plantpheno.evaluation.baselines import BETTER
from plantpheno.records.evaluation import Verdict
from plantpheno.records.model_meta import ModelMeta, read_meta
from plantpheno.registry.index import RegistryIndex, VersionRecord, mlflow_client, open_index
from plantpheno.registry.location import (
    ENV_URI,
    RegistryLocation,
    locate_registry,
    resolve_registry_uri,
    sqlite_path,
)
from plantpheno.registry.refs import ModelRef, check_alias, check_name
from plantpheno.registry.stores import check_store, check_writable, read_only_error

if TYPE_CHECKING:
    from plantpheno.config import RegistryConfig
    from plantpheno.registry.package import ModelPackage

__all__ = ["ENV_URI", "ModelRegistry", "RegistryLocation", "VersionInfo", "default_registry_uri", "lineage_tags",
           "locate_registry", "resolve_registry_uri", "run_registry_uri"]

ARTIFACT_EXPERIMENT = "plantpheno-models"
BASELINE_TAG = "test_vs_baseline"  # the test verdict against the trivial baseline: better, not clearly better, worse
T = TypeVar("T")


def default_registry_uri() -> str:
    """The registry of a command given no ``--registry`` (see :func:`resolve_registry_uri`)."""
    return resolve_registry_uri()


def run_registry_uri(registry: RegistryConfig) -> str:
    """The registry a run registers in (see :func:`resolve_registry_uri`; the run's ``registry.uri`` counts)."""
    return resolve_registry_uri(run_uri=registry.uri)


def check_registry_exists(uri: str) -> str:
    """``uri`` names a registry that exists (a local one: its sqlite file or folder is there); read commands
    check this first, so that a mistyped path is reported instead of silently becoming a new, empty registry.

    Raises:
        RegistryError: naming the URI and the path that is missing.
    """
    hint = (f"check --registry or ${ENV_URI}; a local registry is created when the first model is registered "
            f"(plantpheno models register, or registry.name in a training config)")
    if uri.startswith("sqlite:"):
        rest = uri.removeprefix("sqlite:///").split("?")[0] if uri.startswith("sqlite:///") else ""
        if rest in ("", ":memory:"):
            return uri
        path = Path(rest)  # sqlite:///relative.db, sqlite:////absolute/path.db
        if path.is_file():
            return uri
        what = "is a folder, not a sqlite file" if path.is_dir() else "does not exist"
        raise RegistryError(f"no registry at {uri}: {path} {what}; {hint}")
    if "://" in uri and not uri.startswith("file:"):
        return uri  # a tracking server (http, https, databricks, ...) answers for itself
    path = Path(uri.removeprefix("file://").removeprefix("file:"))
    if path.is_file():
        raise RegistryError(f"registry {uri} is a file; for a sqlite registry write sqlite:///{path.resolve()}")
    if not path.is_dir():
        raise RegistryError(f"no registry at {uri}: {path} does not exist; {hint}")
    return uri


@dataclass(frozen=True)
class VersionInfo:
    """One registered version, as shown by ``models list/show``."""

    name: str
    version: int
    aliases: tuple[str, ...]
    source: str
    tags: dict[str, str]
    created: float
    description: str


class ModelRegistry:
    """Register, list, resolve, promote, delete and download model versions.

    ``ModelRegistry()`` opens the registry every command would use (:func:`resolve_registry_uri`), after
    checking that it is one (:func:`~plantpheno.registry.stores.check_store`: scheme, SQLite file, server reachable
    within seconds; ``say`` gets the line shown while it waits for a server)."""

    def __init__(self, uri: str | None = None, *, say: Callable[[str], None] | None = None) -> None:
        self.uri = uri or resolve_registry_uri()
        check_store(self.uri, say=say)
        self.index: RegistryIndex = open_index(self.uri)
        self._client: Any = None

    @property
    def client(self) -> Any:
        """MLflow's client for this registry (imported on first use: it takes seconds)."""
        if self._client is None:
            self._client = mlflow_client(self.uri)
        return self._client

    # -- writing ------------------------------------------------------------------------------
    def register(self, run_dir: Path, *, name: str, alias: str | None = None, force: bool = False) -> VersionInfo:
        """Package a run's best checkpoint and register it as a new version of ``name``: an MLflow pyfunc model
        (``registry/pyfunc.py``) that holds the package.

        Raises:
            RegistryError: unless ``force``: the run does not clearly beat its trivial baseline on the test split
                (or has no test evaluation), or its task or class names differ from those of the name's latest
                version; and whatever ``force`` says, an invalid name or alias.
        """
        from plantpheno.tracking.mlflow_backend import quiet_mlflow

        quiet_mlflow()  # before registry.pyfunc imports MLflow: its INFO lines stay out of our output
        from plantpheno.registry.package import package_run
        from plantpheno.registry.pyfunc import save_pyfunc_model

        check_name(name)
        if alias is not None:
            check_alias(alias)
        check_writable(self.uri)
        with tempfile.TemporaryDirectory(prefix="plantpheno-package-") as tmp:
            package = package_run(run_dir, Path(tmp) / "package")
            if not force:
                self._check_same_job(name, package.meta, Path(tmp) / "latest")
                check_beats_baseline(package.meta.baseline_verdict, run_dir=run_dir, what=f"registering it as {name}" +
                                     (f" (alias {alias})" if alias else ""))
            if self.index.exists is False:
                self._create_store()
            model_dir = save_pyfunc_model(package, Path(tmp) / "model")
            run_id = self._retry(lambda: self._artifact_run(run_dir.name))
            self._retry(lambda: self.client.log_artifacts(run_id, str(model_dir), artifact_path="model"))
            self._retry(lambda: self.client.set_terminated(run_id))
        source = f"{self.client.get_run(run_id).info.artifact_uri}/model"
        self._retry(lambda: self._ensure_model(name))
        version = self._retry(lambda: self.client.create_model_version(
            name, source, run_id=run_id, tags=lineage_tags(package), description=f"from {run_dir.resolve()}"))
        if alias is not None:
            self._retry(lambda: self.client.set_registered_model_alias(name, alias, version.version))
        self.index = open_index(self.uri)  # a new store can now be read without MLflow
        return self.resolve(ModelRef(name, version=int(version.version)))

    def promote(self, name: str, version: int, alias: str, *, force: bool = False) -> VersionInfo:
        """Point ``alias`` at ``version`` (one atomic update: the alias never resolves to two versions).

        Raises:
            RegistryError: the version was registered with ``force`` although it does not clearly beat its trivial
                baseline on test (its ``test_vs_baseline`` tag), unless ``force`` again.
        """
        info = self.resolve(ModelRef(check_name(name), version=version))
        said = info.tags.get(BASELINE_TAG)
        if not force and said is not None and said != BETTER:
            raise RegistryError(f"{name} version {version} does not clearly beat its trivial baseline on the test "
                                f"split ({BASELINE_TAG}: {said}); pointing alias {alias} at it needs --force "
                                f"(force=True in Python)")
        check_writable(self.uri)
        with self._read_only_named():
            self.index.set_alias(name, check_alias(alias), version)
        return self.resolve(ModelRef(name, alias=alias))

    def delete(self, name: str, version: int | None = None) -> None:
        """Delete one version, or the whole model with all its versions."""
        self.resolve(ModelRef(check_name(name), version=version))
        check_writable(self.uri)
        with self._read_only_named():
            if version is None:
                self.client.delete_registered_model(name)
            else:
                self.client.delete_model_version(name, str(version))

    # -- reading ------------------------------------------------------------------------------
    def list_versions(self, name: str | None = None) -> list[VersionInfo]:
        """Every live version (of one model, or of all), each with its aliases; by name, newest first."""
        if name is not None:
            check_name(name)
        aliases = self.index.aliases(name)
        records = self.index.versions(name)
        return sorted((self._info(r, aliases.get(r.name, {})) for r in records),
                      key=lambda v: (v.name, -v.version))

    def list_models(self) -> list[VersionInfo]:
        """The latest version of every registered model."""
        latest: dict[str, VersionInfo] = {}
        for info in self.list_versions():
            latest.setdefault(info.name, info)
        return list(latest.values())

    def versions(self, name: str) -> list[VersionInfo]:
        """Every live version of ``name``, oldest first."""
        return sorted(self.list_versions(name), key=lambda v: v.version)

    def resolve(self, ref: ModelRef) -> VersionInfo:
        """The version a reference means (latest, a number, or an alias)."""
        versions = self.index.versions(ref.name)
        if not versions:
            known = ", ".join(self.index.model_names()) or "none"
            where = self.uri if self.index.exists else f"{self.uri} (nothing has been registered there yet)"
            raise RegistryError(f"no registered model named {ref.name!r} in {where} (known: {known})")
        aliases = self.index.aliases(ref.name).get(ref.name, {})
        if ref.alias is not None:
            if ref.alias not in aliases:
                raise RegistryError(f"model {ref.name!r} has no alias {ref.alias!r} "
                                    f"(aliases: {', '.join(sorted(aliases)) or 'none'})")
            wanted = aliases[ref.alias]
        else:
            wanted = ref.version if ref.version is not None else versions[-1].version
        match = [v for v in versions if v.version == wanted]
        if not match:
            raise RegistryError(f"model {ref.name!r} has no version {wanted} "
                                f"(versions: {', '.join(str(v.version) for v in versions)})")
        return self._info(match[0], aliases)

    def download(self, ref: ModelRef, dst: Path) -> ModelPackage:
        """Fetch a version's package into ``dst`` and open it."""
        from plantpheno.registry.package import ModelPackage

        return ModelPackage.open(self.index.fetch(self.resolve(ref).source, dst))

    def read_file(self, ref: ModelRef | VersionInfo, name: str) -> str:
        """One text file of a version's package (e.g. ``MODEL_CARD.md``), without fetching the weights."""
        info = ref if isinstance(ref, VersionInfo) else self.resolve(ref)
        with tempfile.TemporaryDirectory(prefix="plantpheno-file-") as tmp:
            return self._fetch_file(info.source, Path(tmp), name).read_text(encoding="utf-8")

    # -- helpers ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _read_only_named(self) -> Iterator[None]:
        """A write the store refused as read-only (a server's, or one found only when writing) in one message."""
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - sqlite3 and MLflow each have their own types
            named = read_only_error(self.uri, exc)
            if named is None:
                raise
            raise named from None

    @staticmethod
    def _info(record: VersionRecord, aliases: dict[str, int]) -> VersionInfo:
        mine = tuple(sorted(a for a, version in aliases.items() if version == record.version))
        return VersionInfo(record.name, record.version, mine, record.source, dict(record.tags), record.created,
                           record.description)

    def _fetch_file(self, source: str, dst: Path, name: str) -> Path:
        """One file of a version's package, fetched under ``dst``: inside the MLflow model folder that registration
        writes (``artifacts/package/NAME``, registry/pyfunc.py), or at the top of versions registered before."""
        from plantpheno.registry.package import PYFUNC_ARTIFACT

        failure: Exception | None = None
        for rel in (f"artifacts/{PYFUNC_ARTIFACT}/{name}", name):
            try:
                path = self.index.fetch(source, dst / "pyfunc" if "/" in rel else dst / "plain", only=rel) / rel
                if path.is_file():
                    return path
            except Exception as exc:  # noqa: BLE001 - not in this layout: try the other one
                failure = exc
        raise RegistryError(f"{source} holds no {name} ({failure})")

    def _check_same_job(self, name: str, meta: ModelMeta, tmp: Path) -> None:
        """A new version must predict what the name's latest version predicts: same task, same classes in order."""
        from plantpheno.registry.package import FORMAT, META_FILE

        versions = self.index.versions(name)
        if not versions:
            return
        latest = versions[-1]
        try:
            theirs = read_meta(self._fetch_file(latest.source, tmp, META_FILE), expected_format=FORMAT)
            their_task, their_names = theirs.task, theirs.class_names
        except (OSError, ValueError, RegistryError):
            their_task, their_names = latest.tags.get("task"), None  # its package is gone: the tags say
        problems = []
        if their_task and their_task != meta.task:
            problems.append(f"its task is {their_task}, this run's is {meta.task}")
        elif meta.is_classification and their_names is not None and list(their_names) != list(meta.class_names or ()):
            problems.append(f"its classes are {_names(their_names)}, this run's are {_names(meta.class_names or [])}")
        if problems:
            raise RegistryError(f"{name} version {latest.version} (the latest) does another job: {problems[0]}. "
                                f"Register this run under another name, or add it as version "
                                f"{latest.version + 1} anyway with --force")

    def _create_store(self) -> None:
        path = sqlite_path(self.uri)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def _ensure_model(self, name: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(name)
        except MlflowException:
            try:
                self.client.create_registered_model(name)
            except MlflowException as exc:  # created by another process meanwhile
                if "already exists" not in str(exc).lower() and "RESOURCE_ALREADY_EXISTS" not in str(exc):
                    raise

    def _artifact_run(self, run_name: str) -> str:
        """A run that holds the package files (one per registration: never overwritten)."""
        from mlflow.exceptions import MlflowException

        exp = self.client.get_experiment_by_name(ARTIFACT_EXPERIMENT)
        if exp is None:
            try:
                exp_id = self.client.create_experiment(ARTIFACT_EXPERIMENT, artifact_location=self._artifact_root())
            except MlflowException:
                exp_id = self.client.get_experiment_by_name(ARTIFACT_EXPERIMENT).experiment_id
        else:
            exp_id = exp.experiment_id
        return self.client.create_run(exp_id, run_name=f"register-{run_name}").info.run_id

    def _artifact_root(self) -> str | None:
        # beside a local sqlite store; a server chooses its own artifact store
        path = sqlite_path(self.uri)
        return (path.parent / "mlartifacts").resolve().as_uri() if path is not None else None

    @staticmethod
    def _retry(action: Callable[[], T], attempts: int = 30) -> T:
        """sqlite allows one writer at a time: concurrent registrations retry on 'database is locked'."""
        for attempt in range(attempts):
            try:
                return action()
            except Exception as exc:  # noqa: BLE001 - MLflow wraps sqlite errors in several types
                transient = "locked" in str(exc).lower() or "unique constraint" in str(exc).lower()
                if not transient or attempt == attempts - 1:
                    raise
                time.sleep(random.uniform(0.05, 0.3) * (1 + attempt / 5))
        raise AssertionError("unreachable")


def _names(names: list[str], shown: int = 6) -> str:
    text = ", ".join(names[:shown]) + (f", ... ({len(names)} in all)" if len(names) > shown else "")
    return f"[{text}]"


def check_beats_baseline(verdict: Verdict | None, *, run_dir: Path, what: str) -> None:
    """Refuse a model that does not clearly beat its trivial baseline on the test split (the paired verdict the
    evaluation computed: the whole interval of the improvement above zero), or that has no test evaluation.

    Raises:
        RegistryError: naming the figures and ``--force``.
    """
    if verdict is None:
        raise RegistryError(f"{run_dir} has no evaluation on the test split, so nothing shows that it beats its "
                            f"trivial baseline; evaluate it (plantpheno evaluate {run_dir} --split test) or pass "
                            f"--force (force=True in Python) to {what} anyway")
    if not verdict.is_better:
        raise RegistryError(f"{run_dir} does not clearly beat its trivial baseline on the test split: the model "
                            f"{verdict.text}; {what} needs --force (force=True in Python)")


def lineage_tags(package: ModelPackage) -> dict[str, str]:
    """Where a version came from, as registry tags (searchable in MLflow)."""
    m = package.meta
    tags = {
        "task": m.task, "backbone": m.backbone, "image_size": str(m.image_size),
        "num_classes": str(len(m.class_names)) if m.class_names else "",
        "source_run_dir": str(m.source_run_dir), "training_mlflow_run_id": str(m.mlflow_run_id or ""),
        "config_sha256": str(m.config_sha256), "dataset_fingerprint": str(m.dataset_fingerprint),
        "git_commit": str(m.git_commit), "git_dirty": str(m.git_dirty),
        "plantpheno_version": m.plantpheno_version, "checkpoint_epoch": str(m.checkpoint_epoch),
        BASELINE_TAG: m.baseline_verdict.verdict if m.baseline_verdict else "not evaluated on test",
    }
    parent = m.parent_model
    if parent is not None:  # model.init_from: the model this one was fine-tuned from
        tags["parent_model"] = parent.reference
        tags["parent_run_dir"] = parent.run_dir or ""
    tags.update({f"test_{k}": f"{v:.6g}" for k, v in (m.test_metrics or {}).items() if v is not None})
    ci = m.confidence_interval
    if ci is not None and ci.known:
        tags.update({f"test_{ci.metric}_ci_low": f"{ci.low:.6g}", f"test_{ci.metric}_ci_high": f"{ci.high:.6g}",
                     "test_ci_confidence": f"{ci.confidence:g}"})
    return tags
