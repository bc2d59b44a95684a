"""``plantpheno train CONFIG [key=value ...]``, ``plantpheno train --config C --data-path D --output-path O``
and ``plantpheno train --resume RUN_DIR``."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from plantpheno.cli.options import integer
from plantpheno.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model from a YAML config, then evaluate it",
                       description="Train a model from a YAML config (plus key.sub=value overrides), evaluate "
                                   "its best checkpoint on the held-out split, and print the run directory. "
                                   "Under torchrun, every process runs this and they train data-parallel. "
                                   "`--config C --data-path D --output-path O` is the same as "
                                   "`C data.root=D output_dir=O` (data.manifest=D for a CSV file).")
    p.add_argument("config", nargs="?", type=Path,
                   help="YAML config file or recipe name, e.g. classify (or --config; see `plantpheno config list`)")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value",
                   help="config overrides, e.g. training.epochs=5 (anywhere on the command line)")
    p.add_argument("--config", dest="config_option", type=Path, default=None, metavar="CONFIG",
                   help="YAML config file or recipe name (as the positional CONFIG)")
    p.add_argument("--data-path", type=Path, default=None, metavar="PATH",
                   help="the dataset: an image folder (sets data.root) or a CSV manifest (sets data.manifest); "
                        "replaces the config's data source; key=value overrides still win")
    p.add_argument("--output-path", type=Path, default=None, metavar="DIR",
                   help="where runs go (sets output_dir): DIR/<experiment>/<run_name>/")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--budget", default=None, metavar="DURATION",
                   help="budget mode: within DURATION (90s, 15m, 1h30m) try bundled EfficientNet-Lite candidates "
                        "cheapest first, choose on validation only, train the chosen one as this run and evaluate "
                        "its test split once (sets budget.time; docs: guide/budget)")
    p.add_argument("--nproc", type=integer(1, 1024), default=None, metavar="N",
                   help="launch N data-parallel processes on this machine with torchrun (--standalone)")
    p.set_defaults(func=run)


def resolve_arguments(args: argparse.Namespace) -> argparse.Namespace:
    """Fold ``--config`` into the positional CONFIG (a ``key=value`` there is an override) and check that
    ``--resume`` comes alone."""
    overrides = list(args.overrides)
    config = args.config
    if args.config_option is not None:
        if config is not None and "=" in str(config):
            overrides.insert(0, str(config))
        elif config is not None:
            raise ConfigError(f"the config is given twice ({config} and --config {args.config_option}); give one")
        config = args.config_option
    if args.resume is not None and (config is not None or overrides or args.data_path or args.output_path
                                    or args.budget is not None):
        raise ConfigError("--resume RUN_DIR takes no config or overrides (nor --data-path, --output-path, --budget): "
                          "a run resumes with its own config")
    if args.budget is not None:
        from plantpheno.config import parse_duration

        try:
            parse_duration(args.budget)
        except ValueError as exc:
            raise ConfigError(f"--budget: expected {exc}") from None
    if args.resume is None and config is None:
        raise ConfigError("give a CONFIG file (or --config CONFIG, or --resume RUN_DIR); CONFIG may be a recipe "
                          "name such as classify (`plantpheno config list` names them)")
    return argparse.Namespace(**{**vars(args), "config": config, "overrides": overrides})


def run(args: argparse.Namespace) -> int:
    args = resolve_arguments(args)
    if args.nproc is not None and args.budget is not None:
        raise ConfigError("--budget runs its candidates in this process; it does not combine with --nproc")
    if args.nproc is not None:
        return _launch_torchrun(args)
    import plantpheno.pipeline as pipeline
    from plantpheno.config import load_config
    from plantpheno.reporting import ConsoleReporter
    from plantpheno.training.loop import Interrupted

    main_rank = os.environ.get("RANK", "0") == "0"
    reporter = ConsoleReporter()
    try:
        if args.resume is not None:
            result = pipeline.resume(args.resume, reporter=reporter)
        else:
            overrides = [*args.overrides, *([f"budget.time={args.budget}"] if args.budget is not None else [])]
            config = load_config(args.config, overrides, data_path=args.data_path, output_path=args.output_path)
            check_parent_first(config.model.init_from, config.data.manifest)
            if config.budget.time is not None:
                from plantpheno.budget import CandidateInterrupted, train_in_budget

                try:
                    result = train_in_budget(config, reporter=reporter).run
                except CandidateInterrupted as exc:
                    print(f"plantpheno: {exc}", file=sys.stderr)
                    return 128 + getattr(signal, exc.reason, signal.SIGINT).value
            else:
                result = pipeline.train(config, reporter=reporter)
    except Interrupted as exc:
        if main_rank:
            print(f"plantpheno: interrupted by {exc.reason} at epoch {exc.state.epoch + 1}, batch {exc.state.batch}; "
                  f"the last checkpoint is saved. Resume with: plantpheno train --resume {exc.run_dir}",
                  file=sys.stderr)
        return 128 + getattr(signal, str(exc.reason), signal.SIGINT).value
    if not main_rank:
        return 0
    from plantpheno.evaluation.report import summary_lines

    for line in summary_lines(result.metrics):
        print(line)
    print(f"run directory: {result.run_dir}")
    return 0


def check_parent_first(init_from: str | None, manifest: Path | None) -> None:
    """Refuse a ``model.init_from`` that names nothing before any data is read: it is the first thing a recipe that
    starts from a parent (``classify_adapt``'s placeholder ``runs/classify/RUN``) needs, so the message names it, and
    ``data.manifest`` too when that file is missing as well. A registered model's name is left to the registry,
    which answers when the run starts."""
    if init_from is None or Path(init_from).expanduser().exists():
        return
    from plantpheno.errors import RegistryError
    from plantpheno.registry.refs import parse_ref

    try:
        parse_ref(init_from)
        return
    except RegistryError:
        pass
    also = (f"; data.manifest {manifest} does not exist either: set it too (a CSV of path,label,split)"
            if manifest is not None and not manifest.is_file() else "")
    raise ConfigError(f"model.init_from {init_from} does not exist as a run directory and is not a registered model "
                      f"reference (NAME, NAME@alias or NAME/VERSION): set it to the model to start from, e.g. "
                      f"model.init_from=runs/<experiment>/<run>{also}")


def _launch_torchrun(args: argparse.Namespace) -> int:
    """``torchrun --standalone --nproc_per_node=N -m plantpheno train ...`` (PyTorch's launcher, not ours, run by
    ``plantpheno.cli.torchrun`` so that a refusal every rank explained ends without the launcher's traceback)."""
    if args.nproc < 1:
        raise ConfigError(f"--nproc must be >= 1, got {args.nproc}")
    command = [sys.executable, "-m", "plantpheno.cli.torchrun", "--standalone", f"--nproc_per_node={args.nproc}",
               "-m", "plantpheno", "train"]
    if args.resume is not None:
        command += ["--resume", str(args.resume)]
    else:
        command += [str(args.config), *args.overrides]
        command += ["--data-path", str(args.data_path)] if args.data_path is not None else []
        command += ["--output-path", str(args.output_path)] if args.output_path is not None else []
    print("plantpheno: running " + " ".join(command[2:]), file=sys.stderr)
    return subprocess.run(command, check=False).returncode
