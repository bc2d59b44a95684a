"""Where a packaged model comes from: a run directory, a package folder, or a registered model (NAME, NAME@alias,
NAME/version), opened as a :class:`~plantpheno.registry.package.ModelPackage`.

It sits above the registry store (it downloads registered versions), which sits above the MLflow pyfunc model,
which wraps :class:`~plantpheno.registry.predict.Predictor`; so prediction itself never imports the store.
"""

from __future__ import annotations

import tempfile
from contextlib import ExitStack
from pathlib import Path

from plantpheno.errors import DataError, RegistryError
from plantpheno.registry.package import META_FILE, MLMODEL_FILE, ModelPackage, package_run
from plantpheno.registry.refs import parse_ref
from plantpheno.registry.store import ModelRegistry
from plantpheno.run.folder import RunDir


def is_registry_ref(source: str) -> bool:
    """Whether ``source`` names a registered model (NAME, NAME@alias, NAME/version) rather than a run or a package
    folder on disk."""
    path = Path(source)
    return not RunDir(path).config.is_file() and not path.is_dir()


def open_model(source: str, stack: ExitStack, *, registry_uri: str | None = None) -> ModelPackage:
    """A run directory, a package folder, or a registry reference (NAME, NAME@alias, NAME/version) in
    ``registry_uri`` (default: :func:`~plantpheno.registry.store.resolve_registry_uri`)."""
    path = Path(source)
    if path.is_dir() and any((path / name).is_file() for name in (META_FILE, MLMODEL_FILE)):
        return ModelPackage.open(path)  # a package (it holds a copy of its run's config.yaml too)
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="plantpheno-model-")))
    if not is_registry_ref(source):
        return package_run(path, tmp / "model") if RunDir(path).config.is_file() else ModelPackage.open(path)
    try:
        ref = parse_ref(source)
    except RegistryError:  # not a model reference, so it was meant as a path
        what = "is a file" if path.exists() else "does not exist"
        raise DataError(f"{source} {what}; MODEL is a run directory, a model package folder, or a registered model "
                        f"(NAME, NAME@alias or NAME/VERSION)") from None
    return ModelRegistry(registry_uri).download(ref, tmp)  # reading: it makes no registry
