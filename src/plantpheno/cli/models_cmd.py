"""``plantpheno models register|list|show|promote|delete|export``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from plantpheno.cli.options import integer, number

REGISTRY_HELP = ("registry (MLflow) URI; default $PLANTPHENO_REGISTRY_URI, else sqlite:///runs/mlflow.db "
                 "(for `register`: the run's own MLflow store)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="the model registry: register, list, show, promote, delete, export")
    models = p.add_subparsers(dest="models_command", required=True, metavar="MODELS_COMMAND")

    def add(name: str, help_text: str, func) -> argparse.ArgumentParser:
        cmd = models.add_parser(name, help=help_text, description=help_text)
        cmd.add_argument("--registry", default=None, metavar="URI", help=REGISTRY_HELP)
        cmd.set_defaults(func=func)
        return cmd

    reg = add("register", "register a run's best checkpoint as a new version of NAME", run_register)
    reg.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    reg.add_argument("--name", required=True)
    reg.add_argument("--alias", default=None, help="also point this alias (e.g. candidate) at the new version")
    add("list", "list registered models with their latest version and aliases", run_list)
    show = add("show", "show a version (NAME, NAME@alias or NAME/VERSION): lineage tags and model card", run_show)
    show.add_argument("ref", metavar="NAME[@alias|/version]")
    promote = add("promote", "point an alias (e.g. champion) at a version", run_promote)
    promote.add_argument("name")
    promote.add_argument("version", type=integer(1))
    promote.add_argument("--alias", required=True)
    delete = add("delete", "delete one version, or a whole model", run_delete)
    delete.add_argument("ref", metavar="NAME[/version]")
    export = add("export", "export to ONNX or TorchScript and check it against the PyTorch model", run_export)
    export.add_argument("ref", metavar="NAME[@alias|/version]|RUN_DIR")
    export.add_argument("out", type=Path, metavar="OUT")
    export.add_argument("--format", choices=("onnx", "torchscript"), required=True)
    export.add_argument("--tolerance", type=number(0), default=1e-4,
                        help="max allowed |difference| of outputs (a finite number >= 0)")


def _registry(args: argparse.Namespace, *, run_dir: Path | None = None):
    """The registry to use; only ``register`` (given ``run_dir``) may create one."""
    from plantpheno.registry.store import (
        ModelRegistry,
        check_registry_exists,
        default_registry_uri,
        run_registry_uri,
    )

    if run_dir is not None:
        from plantpheno.rundir import RunDir

        return ModelRegistry(args.registry or run_registry_uri(RunDir(run_dir).read_config()))
    return ModelRegistry(check_registry_exists(args.registry or default_registry_uri()))


def run_register(args: argparse.Namespace) -> int:
    registry = _registry(args, run_dir=args.run_dir)
    info = registry.register(args.run_dir, name=args.name, alias=args.alias)
    aliases = f" (aliases: {', '.join(info.aliases)})" if info.aliases else ""
    print(f"registered {info.name} version {info.version}{aliases} in {registry.uri}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from plantpheno.runs import format_table

    rows = [[v.name, v.version, ", ".join(v.aliases) or "-", v.tags.get("task", "-"), v.tags.get("backbone", "-"),
             next((f"{k[5:]} {val}" for k, val in v.tags.items() if k.startswith("test_")), "-")]
            for v in _registry(args).list_models()]
    print(format_table(["model", "latest", "aliases", "task", "backbone", "test"], rows) if rows
          else "no registered models")
    return 0


def run_show(args: argparse.Namespace) -> int:
    import tempfile

    from plantpheno.registry.refs import parse_ref

    registry = _registry(args)
    ref = parse_ref(args.ref)
    info = registry.resolve(ref)
    print(json.dumps({"name": info.name, "version": info.version, "aliases": list(info.aliases),
                      "source": info.source, "tags": info.tags}, indent=2))
    with tempfile.TemporaryDirectory() as tmp:
        package = registry.download(ref, Path(tmp))
        print((package.folder / "MODEL_CARD.md").read_text(encoding="utf-8"))
    return 0


def run_promote(args: argparse.Namespace) -> int:
    info = _registry(args).promote(args.name, args.version, args.alias)
    print(f"{info.name}@{args.alias} -> version {info.version}")
    return 0


def run_delete(args: argparse.Namespace) -> int:
    from plantpheno.registry.refs import parse_ref

    ref = parse_ref(args.ref)
    if ref.alias is not None:
        from plantpheno.errors import RegistryError

        raise RegistryError("delete takes NAME or NAME/VERSION, not an alias")
    _registry(args).delete(ref.name, ref.version)
    print(f"deleted {ref}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from contextlib import ExitStack

    from plantpheno.registry.export import export_package
    from plantpheno.registry.predict import open_model

    with ExitStack() as stack:
        package = open_model(args.ref, stack, registry_uri=args.registry)
        report = export_package(package, args.format, args.out, tolerance=args.tolerance)
    print(report.summary())
    return 0
