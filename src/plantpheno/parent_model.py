"""Finding the model a run starts from (``model.init_from``): a run directory or a registered model
(``NAME``, ``NAME@alias``, ``NAME/VERSION``), read as its weights, its metadata and a lineage record."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from plantpheno.config import Config
from plantpheno.errors import ConfigError, RegistryError
from plantpheno.records.model_meta import ModelMeta
from plantpheno.run.folder import RunDir
from plantpheno.training.checkpoint import load_checkpoint
from plantpheno.training.init_from import check_parent, load_parent_weights


def start_from_parent(model: nn.Module, config: Config, *, task: str,
                      class_names: list[str] | None) -> dict[str, Any]:
    """Load ``config.model.init_from``'s weights into ``model`` (classes matched by name); returns the lineage
    record that goes into the run's checkpoints and registry packages as ``parent_model``."""
    ref = config.model.init_from
    assert ref is not None
    state, meta, record = _read_parent(ref, config)
    check_parent(meta, task=task, backbone=config.model.backbone, origin=ref)
    record.update(load_parent_weights(model, state, meta, class_names=class_names, origin=ref))
    return record


def _read_parent(ref: str, config: Config) -> tuple[dict[str, Any], ModelMeta, dict[str, Any]]:
    path = Path(ref).expanduser()
    if RunDir(path).config.is_file():
        run = RunDir(path)
        found = run.checkpoint_to_use()
        if found is None:
            raise ConfigError(f"model.init_from {ref}: the run has no checkpoint ({run.best_checkpoint} is missing)")
        checkpoint = load_checkpoint(found)
        meta = ModelMeta.from_checkpoint(checkpoint, source=found)
        return checkpoint["model"], meta, {
            "reference": ref, "kind": "run", "run_dir": str(path.resolve()), "checkpoint": found.name,
            "checkpoint_epoch": checkpoint["state"]["epoch"], "backbone": meta.backbone}
    if path.exists():
        what = "a folder without config.yaml" if path.is_dir() else "a file"
        raise ConfigError(f"model.init_from {ref} is {what}, not a run directory; give a run directory "
                          f"(OUTPUT_DIR/<experiment>/<run>) or a registered model (NAME@alias or NAME/VERSION)")
    return _from_registry(ref, config)


def _from_registry(ref: str, config: Config) -> tuple[dict[str, Any], ModelMeta, dict[str, Any]]:
    from safetensors.torch import load_file

    from plantpheno.registry.package import WEIGHTS_FILE
    from plantpheno.registry.refs import parse_ref
    from plantpheno.registry.store import ModelRegistry, locate_registry

    try:
        parsed = parse_ref(ref)
    except RegistryError:
        raise ConfigError(f"model.init_from {ref} does not exist as a run directory and is not a registered model "
                          f"reference (NAME, NAME@alias or NAME/VERSION)") from None
    location = locate_registry(run_uri=config.registry.uri)
    registry = ModelRegistry(location.uri)
    info = registry.resolve(parsed)
    with tempfile.TemporaryDirectory(prefix="plantpheno-parent-") as tmp:
        package = registry.download(parsed, Path(tmp))
        state = load_file(str(package.folder / WEIGHTS_FILE))
        meta = package.meta
    return state, meta, {"reference": ref, "kind": "registry", "registry": location.uri, "name": info.name,
                         "version": info.version, "run_dir": meta.source_run_dir,
                         "checkpoint_epoch": meta.checkpoint_epoch, "backbone": meta.backbone}
