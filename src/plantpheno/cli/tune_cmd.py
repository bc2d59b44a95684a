"""``plantpheno tune CONFIG SPACE [key=value ...]``: hyperparameter search with Optuna."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from pathlib import Path

from plantpheno.cli.options import integer, number

_SETTINGS = ("study", "sampler", "pruner", "metric", "direction", "trials", "timeout", "storage")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune", help="search hyperparameters with Optuna (grid, random, TPE; pruning; parallel; resumable)",
        description="Run an Optuna study: each trial trains CONFIG (plus overrides) with values from the SPACE "
                    "file's space: section, in OUTPUT_DIR/<experiment>/<study>/trial-NNNN. Flags override the "
                    "SPACE file's tuning: section. Re-running the same command continues the study.")
    p.add_argument("config", type=Path, help="training config (YAML file or recipe name)")
    p.add_argument("space", type=Path, help="tuning file (YAML) with a space: section and optional tuning: section, "
                   "or a search-space recipe such as tune/demo_space")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value",
                   help="training config overrides (anywhere on the command line, also after the flags)")
    p.add_argument("--sampler", choices=("grid", "random", "tpe"), help="default tpe")
    p.add_argument("--pruner", choices=("median", "hyperband", "none"), help="default median")
    p.add_argument("--trials", type=integer(1, 1_000_000), metavar="N",
                   help="trials in the study, all workers together "
                   "(random/tpe default 20; grid: all combinations)")
    p.add_argument("--timeout", type=number(0, above=True), metavar="S", help="start no new trial after S seconds")
    p.add_argument("--metric", help="objective: its best value over epochs (default: the config's training.monitor)")
    p.add_argument("--direction", choices=("maximize", "minimize"), help="default from the metric")
    p.add_argument("--storage", metavar="URL", help="journal:///path/study.log, sqlite:///path/study.db, "
                   "postgresql://...; default: a journal file in the study folder")
    p.add_argument("--study", metavar="NAME", help="study name and folder (default: the SPACE file's name)")
    p.add_argument("--workers", type=integer(1, 256), default=1, metavar="K",
                   help="worker processes on this machine (default 1)")
    p.add_argument("--dry-run", action="store_true", help="check the space and print the trials; train nothing")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # a worker process of a study
    p.add_argument("--worker-index", type=integer(0, 255), default=0, help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from plantpheno.config import load_config
    from plantpheno.tuning import describe_plan, load_tuning_file, make_plan, merge_settings

    config = load_config(args.config, args.overrides)
    space, settings = load_tuning_file(args.space)
    settings = merge_settings(settings, {name: getattr(args, name) for name in _SETTINGS})
    if args.dry_run:
        print("\n".join(describe_plan(make_plan(config, space, settings))))
        return 0
    _quiet_optuna(verbose=getattr(args, "verbose", False))
    from plantpheno.reporting import ConsoleReporter
    from plantpheno.training.loop import Interrupted

    try:
        if args.worker:
            _run_as_worker(make_plan(config, space, settings), args)
            return 0
        from plantpheno.tuning import tune

        result = tune(config, space, settings=settings, workers=args.workers, reporter=ConsoleReporter())
    except Interrupted as exc:
        print(f"plantpheno: tuning interrupted by {exc.reason}; the running trial is recorded as failed and will "
              f"run again: re-run the same command to continue the study", file=sys.stderr)
        return 128 + getattr(signal, exc.reason, signal.SIGINT).value
    print("\n".join(result.summary()))
    if "best_config" in result.files:
        print(f"train it: plantpheno train {result.files['best_config']}")
        print("(the trials were scored and evaluated on the validation split only; that run evaluates the test "
              "split, once)")
    return 0


def _run_as_worker(plan, args: argparse.Namespace) -> None:
    from plantpheno.tuning import run_worker

    deadline = time.time() + args.timeout if args.timeout else None
    from plantpheno.reporting import ConsoleReporter

    run_worker(plan, worker_index=args.worker_index, deadline=deadline, reporter=ConsoleReporter())


def _quiet_optuna(*, verbose: bool) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.WARNING)
    logging.getLogger("optuna").propagate = False
