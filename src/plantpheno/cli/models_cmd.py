"""``plantpheno models register|list|show|promote|delete|export``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from plantpheno.cli.options import integer, number

REGISTRY_HELP = ("registry (MLflow) URI; default: $PLANTPHENO_REGISTRY_URI, else $MLFLOW_REGISTRY_URI or "
                 "$MLFLOW_TRACKING_URI, else the project's runs/mlflow.db (found from this folder upwards); "
                 "for `register`, a run's registry.uri comes first")


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
    reg.add_argument("--force", action="store_true",
                     help="register even if the run does not clearly beat its trivial baseline on the test split "
                          "(or has no test evaluation), or its task or classes differ from NAME's latest version")
    lst = add("list", "list every registered version with its aliases (newest first)", run_list)
    lst.add_argument("name", nargs="?", default=None, help="only this model")
    lst.add_argument("--json", action="store_true", help="one JSON object per version")
    show = add("show", "show a version (NAME, NAME@alias or NAME/VERSION): lineage tags and model card", run_show)
    show.add_argument("ref", metavar="NAME[@alias|/version]")
    promote = add("promote", "point an alias (e.g. champion) at a version", run_promote)
    promote.add_argument("name")
    promote.add_argument("version", type=integer(1))
    promote.add_argument("--alias", required=True)
    promote.add_argument("--force", action="store_true",
                         help="point the alias at a version that does not clearly beat its trivial baseline on test")
    delete = add("delete", "delete one version, or a whole model", run_delete)
    delete.add_argument("ref", metavar="NAME[/version]")
    export = add("export", "export to ONNX or TorchScript and check it against the PyTorch model", run_export)
    export.add_argument("ref", metavar="NAME[@alias|/version]|RUN_DIR")
    export.add_argument("out", type=Path, metavar="OUT")
    export.add_argument("--format", choices=("onnx", "torchscript"), required=True)
    export.add_argument("--tolerance", type=number(0), default=1e-4,
                        help="max allowed |difference| of outputs (a finite number >= 0)")


def _registry(args: argparse.Namespace, *, run_dir: Path | None = None):
    """The registry this command uses (one rule: registry.location), announced on stderr. Only ``register``
    (given ``run_dir``) may create one; no read command does (the project's own registry, not made yet, reads
    as empty), and one named with ``--registry`` or ``$PLANTPHENO_REGISTRY_URI`` must exist, so that a mistyped
    path is reported instead of listing nothing."""
    from plantpheno.registry.store import ModelRegistry, locate_registry

    run_uri = None
    if run_dir is not None and not args.registry:
        from plantpheno.run.folder import RunDir

        run_uri = RunDir.of(run_dir).read_config().registry.uri
    location = locate_registry(args.registry, run_uri=run_uri)
    print(location.describe(), file=sys.stderr)
    return ModelRegistry(location.uri if run_dir is not None else _named_must_exist(location),
                         say=lambda line: print(line, file=sys.stderr))


def _named_must_exist(location) -> str:
    """``location.uri``, checked to exist when the user named it (flag or environment variable)."""
    from plantpheno.registry.location import ENV_URI
    from plantpheno.registry.store import check_registry_exists

    if location.source in ("--registry", f"${ENV_URI}"):
        return check_registry_exists(location.uri)
    return location.uri


def run_register(args: argparse.Namespace) -> int:
    registry = _registry(args, run_dir=args.run_dir)
    info = registry.register(args.run_dir, name=args.name, alias=args.alias, force=args.force)
    aliases = f" (aliases: {', '.join(info.aliases)})" if info.aliases else ""
    print(f"registered {info.name} version {info.version}{aliases} in {registry.uri}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    import time

    from plantpheno.run.listing import format_table

    versions = _registry(args).list_versions(args.name)
    if args.json:
        for v in versions:
            print(json.dumps({"name": v.name, "version": v.version, "aliases": list(v.aliases), "source": v.source,
                              "created": v.created, "tags": v.tags}))
        return 0
    latest = {v.name for v in versions}
    rows = []
    for v in versions:
        name = v.name if v.name in latest else ""
        latest.discard(v.name)
        rows.append([name, v.version, ", ".join(v.aliases) or "-", v.tags.get("task", "-"),
                     v.tags.get("backbone", "-"), _test_metric(v.tags),
                     time.strftime("%Y-%m-%d %H:%M", time.localtime(v.created)),
                     Path(v.tags.get("source_run_dir", "-")).name or "-"])
    print(format_table(["model", "version", "aliases", "task", "backbone", "test", "registered", "run"], rows)
          if rows else "no registered models" + (f" named {args.name}" if args.name else ""))
    return 0


def _test_metric(tags: dict[str, str]) -> str:
    """The headline test metric with its bootstrap interval (when the version recorded one)."""
    metrics = sorted(k for k in tags if k.startswith("test_") and not k.endswith(("_ci_low", "_ci_high",
                                                                                    "_confidence")))
    # the headline metric is the one with an interval
    key = next((k for k in metrics if f"{k}_ci_low" in tags), metrics[0] if metrics else None)
    if key is None:
        return "-"
    low, high = tags.get(f"{key}_ci_low"), tags.get(f"{key}_ci_high")
    ci = (f" ({float(tags.get('test_ci_confidence', 0.95)):.0%} CI {float(low):.3g}-{float(high):.3g})"
          if low is not None and high is not None else "")
    return f"{key[5:]} {float(tags[key]):.3g}{ci}"


def run_show(args: argparse.Namespace) -> int:
    from plantpheno.registry.package import CARD_FILE
    from plantpheno.registry.refs import parse_ref

    registry = _registry(args)
    info = registry.resolve(parse_ref(args.ref))
    print(json.dumps({"name": info.name, "version": info.version, "aliases": list(info.aliases),
                      "source": info.source, "tags": info.tags}, indent=2))
    print(registry.read_file(info, CARD_FILE))
    return 0


def run_promote(args: argparse.Namespace) -> int:
    registry = _registry(args)
    before = next((v.version for v in registry.list_versions(args.name) if args.alias in v.aliases), None)
    info = registry.promote(args.name, args.version, args.alias, force=args.force)
    moved = f" (was version {before})" if before not in (None, info.version) else ""
    print(f"{info.name}@{args.alias} -> version {info.version}{moved}")
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
    from plantpheno.registry.model_source import open_model
    from plantpheno.reporting import ConsoleReporter

    with ExitStack() as stack:
        package = open_model(args.ref, stack, registry_uri=registry_for(args.ref, args.registry))
        report = export_package(package, args.format, args.out, tolerance=args.tolerance, reporter=ConsoleReporter())
    print(report.summary())
    return 0


def registry_for(source: str, explicit: str | None) -> str | None:
    """For a model given as a registry reference (not a run or package folder): the registry, announced."""
    from plantpheno.registry.model_source import is_registry_ref

    if not is_registry_ref(source):
        return explicit
    from plantpheno.registry.store import locate_registry

    location = locate_registry(explicit)
    print(location.describe(), file=sys.stderr)
    return _named_must_exist(location)
