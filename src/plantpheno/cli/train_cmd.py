"""``plantpheno train CONFIG [key=value ...]`` and ``plantpheno train --resume RUN_DIR``."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from plantpheno.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model from a YAML config, then evaluate it",
                       description="Train a model from a YAML config (plus key.sub=value overrides), evaluate "
                                   "its best checkpoint on the held-out split, and print the run directory. "
                                   "Under torchrun, every process runs this and they train data-parallel.")
    p.add_argument("config", nargs="?", type=Path, help="YAML config file")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides, e.g. training.epochs=5")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="launch N data-parallel processes on this machine with torchrun (--standalone)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.nproc is not None:
        return _launch_torchrun(args)
    from plantpheno import pipeline
    from plantpheno.config import load_config
    from plantpheno.reporting import ConsoleReporter
    from plantpheno.training.trainer import Interrupted

    main_rank = os.environ.get("RANK", "0") == "0"
    reporter = ConsoleReporter()
    try:
        if args.resume is not None:
            if args.config is not None or args.overrides:
                raise ConfigError("--resume RUN_DIR takes no config or overrides: a run resumes with its own config")
            result = pipeline.resume(args.resume, reporter=reporter)
        else:
            if args.config is None:
                raise ConfigError("give a CONFIG file (or --resume RUN_DIR)")
            result = pipeline.train(load_config(args.config, args.overrides), reporter=reporter)
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


def _launch_torchrun(args: argparse.Namespace) -> int:
    """``torchrun --standalone --nproc_per_node=N -m plantpheno train ...`` (PyTorch's launcher, not ours)."""
    if args.nproc < 1:
        raise ConfigError(f"--nproc must be >= 1, got {args.nproc}")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
               "-m", "plantpheno", "train"]
    command += ["--resume", str(args.resume)] if args.resume is not None else [str(args.config), *args.overrides]
    print("plantpheno: running " + " ".join(command[2:]), file=sys.stderr)
    return subprocess.run(command, check=False).returncode
