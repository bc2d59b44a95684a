"""The model registry: MLflow's Model Registry (sqlite by default, a team's server when configured).

plantpheno adds on top: a self-contained package per version (weights as safetensors, preprocessing,
class names, model card), lineage tags, validated names, and retries so that several processes can
register the same name at once without losing a version.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from plantpheno.config import Config
from plantpheno.errors import RegistryError
from plantpheno.registry.package import ModelPackage, package_run
from plantpheno.registry.refs import ModelRef, check_alias, check_name

ENV_URI = "PLANTPHENO_REGISTRY_URI"
ARTIFACT_EXPERIMENT = "plantpheno-models"
T = TypeVar("T")


def default_registry_uri(output_dir: Path = Path("runs")) -> str:
    """``$PLANTPHENO_REGISTRY_URI``, else the embedded store that training uses: OUTPUT_DIR/mlflow.db."""
    from plantpheno.tracking.mlflow_backend import default_uri

    return os.environ.get(ENV_URI) or default_uri(output_dir)


def run_registry_uri(config: Config) -> str:
    """Where a run registers by default: ``registry.uri``, else ``$PLANTPHENO_REGISTRY_URI``, else the
    MLflow store the run tracks to (``tracking.mlflow.uri`` or OUTPUT_DIR/mlflow.db)."""
    from plantpheno.tracking.mlflow_backend import default_uri

    return (config.registry.uri or os.environ.get(ENV_URI) or config.tracking.mlflow.uri
            or default_uri(config.output_dir))


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
    """Register, list, resolve, promote, delete and download model versions."""

    def __init__(self, uri: str) -> None:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # our CLI prints its own lines
        from mlflow import MlflowClient

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)

    # -- writing ------------------------------------------------------------------------------
    def register(self, run_dir: Path, *, name: str, alias: str | None = None) -> VersionInfo:
        """Package a run's best checkpoint and register it as a new version of ``name``: an MLflow pyfunc model
        (``registry/pyfunc.py``) that holds the package."""
        from plantpheno.registry.pyfunc import save_pyfunc_model

        check_name(name)
        if alias is not None:
            check_alias(alias)
        with tempfile.TemporaryDirectory(prefix="plantpheno-package-") as tmp:
            package = package_run(run_dir, Path(tmp) / "package")
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
        return self.resolve(ModelRef(name, version=int(version.version)))

    def promote(self, name: str, version: int, alias: str) -> VersionInfo:
        """Point ``alias`` at ``version`` (one atomic update: the alias never resolves to two versions)."""
        self.resolve(ModelRef(check_name(name), version=version))
        self.client.set_registered_model_alias(name, check_alias(alias), str(version))
        return self.resolve(ModelRef(name, alias=alias))

    def delete(self, name: str, version: int | None = None) -> None:
        """Delete one version, or the whole model with all its versions."""
        self.resolve(ModelRef(check_name(name), version=version))
        if version is None:
            self.client.delete_registered_model(name)
        else:
            self.client.delete_model_version(name, str(version))

    # -- reading ------------------------------------------------------------------------------
    def list_models(self) -> list[VersionInfo]:
        """The latest version of every registered model."""
        return [self.resolve(ModelRef(m.name)) for m in self.client.search_registered_models()
                if self._versions(m.name)]

    def versions(self, name: str) -> list[VersionInfo]:
        aliases = self._aliases(check_name(name))
        return [self._info(v, aliases) for v in self._versions(name)]

    def resolve(self, ref: ModelRef) -> VersionInfo:
        """The version a reference means (latest, a number, or an alias)."""
        versions = self._versions(ref.name)
        if not versions:
            known = ", ".join(m.name for m in self.client.search_registered_models()) or "none"
            raise RegistryError(f"no registered model named {ref.name!r} in {self.uri} (known: {known})")
        aliases = self._aliases(ref.name)
        if ref.alias is not None:
            if ref.alias not in aliases:
                raise RegistryError(f"model {ref.name!r} has no alias {ref.alias!r} "
                                    f"(aliases: {', '.join(sorted(aliases)) or 'none'})")
            wanted = aliases[ref.alias]
        else:
            wanted = ref.version if ref.version is not None else int(versions[-1].version)
        match = [v for v in versions if int(v.version) == wanted]
        if not match:
            raise RegistryError(f"model {ref.name!r} has no version {wanted} "
                                f"(versions: {', '.join(str(v.version) for v in versions)})")
        return self._info(match[0], aliases)

    def download(self, ref: ModelRef, dst: Path) -> ModelPackage:
        """Fetch a version's package into ``dst`` and open it."""
        import mlflow

        info = self.resolve(ref)
        folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=info.source, dst_path=str(dst),
                                                          tracking_uri=self.uri))
        return ModelPackage.open(folder)

    # -- helpers ------------------------------------------------------------------------------
    def _versions(self, name: str) -> list[Any]:
        found = self.client.search_model_versions(f"name='{name}'")
        return sorted(found, key=lambda v: int(v.version))

    def _aliases(self, name: str) -> dict[str, int]:
        """alias -> version, read from the registered model (search results do not carry aliases)."""
        return {alias: int(version) for alias, version in (self.client.get_registered_model(name).aliases or {}).items()}

    def _info(self, v: Any, aliases: dict[str, int]) -> VersionInfo:
        mine = tuple(sorted(a for a, version in aliases.items() if version == int(v.version)))
        return VersionInfo(v.name, int(v.version), mine, v.source, dict(v.tags or {}),
                           v.creation_timestamp / 1000, v.description or "")

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
        if self.uri.startswith("sqlite:///"):
            return (Path(self.uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
        return None

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


def lineage_tags(package: ModelPackage) -> dict[str, str]:
    """Where a version came from, as registry tags (searchable in MLflow)."""
    m = package.meta
    tags = {
        "task": m["task"], "backbone": m["backbone"], "image_size": str(m["image_size"]),
        "source_run_dir": m["source_run_dir"], "training_mlflow_run_id": str(m.get("mlflow_run_id") or ""),
        "config_sha256": m["config_sha256"], "dataset_fingerprint": m["dataset_fingerprint"],
        "git_commit": str(m["git_commit"]), "git_dirty": str(m["git_dirty"]),
        "plantpheno_version": m["plantpheno_version"], "checkpoint_epoch": str(m["checkpoint_epoch"]),
    }
    tags.update({f"test_{k}": f"{v:.6g}" for k, v in (m.get("test_metrics") or {}).items()})
    return tags
