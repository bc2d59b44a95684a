"""Command-line interface: parse arguments, call the library, turn errors into one-line messages.

Heavy modules (torch, timm) are imported by the subcommands, so ``plantpheno --help`` is fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from plantpheno.version import __version__
from plantpheno.errors import PlantPhenoError

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    from plantpheno.cli import (
        config_cmd,
        data_cmd,
        evaluate_cmd,
        models_cmd,
        predict_cmd,
        report_cmd,
        runs_cmd,
        train_cmd,
        tune_cmd,
    )

    parser = argparse.ArgumentParser(
        prog="plantpheno",
        description="Train, evaluate and track plant-phenotyping image models from one YAML config.",
    )
    parser.add_argument("--version", action="version", version=f"plantpheno {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details (INFO level)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (train_cmd, evaluate_cmd, report_cmd, tune_cmd, predict_cmd, models_cmd, runs_cmd, data_cmd,
                   config_cmd):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if not args.verbose:  # MLflow's INFO lines and the run links it writes to stdout: only with -v
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    try:
        return int(args.func(args) or 0)
    except PlantPhenoError as exc:
        _error_line(f"plantpheno: error: {exc}")
        return EXIT_USAGE
    except BrokenPipeError:  # `plantpheno models show X | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:  # a second Ctrl-C during training, or Ctrl-C elsewhere
        print("plantpheno: aborted", file=sys.stderr)
        return 130
    except OSError as exc:  # a write outside plantpheno's own helpers (a library's) that the disk refused
        from plantpheno.files.atomic import STORAGE_ERRNOS, storage_error

        if exc.errno not in STORAGE_ERRNOS or not exc.filename:
            raise
        target = Path(os.fsdecode(exc.filename))
        _error_line(f"plantpheno: error: {storage_error(exc, target, existed=target.exists())}")
        return EXIT_USAGE


def _error_line(message: str) -> None:
    """Write ``message`` and its newline to stderr in one write: under torchrun every rank prints the same refusal
    into one pipe, and ``print`` (the text, then the newline) let another rank's lines land between the two (a
    write of up to 4 KiB to a pipe is never interleaved)."""
    sys.stderr.flush()
    data = (message + "\n").encode(sys.stderr.encoding or "utf-8", errors="backslashreplace")
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # a replaced stderr (pytest's capsys, an IDE): no descriptor
        sys.stderr.write(message + "\n")
        sys.stderr.flush()
        return
    while data:
        data = data[os.write(fd, data):]


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line; ``key.sub=value`` overrides may stand anywhere, also after the flags
    (argparse alone takes a positional list only before them)."""
    args, extra = parser.parse_known_args(argv)
    overrides = [a for a in extra if "=" in a and not a.startswith("-")]
    if overrides and hasattr(args, "overrides"):
        args.overrides = [*(args.overrides or []), *overrides]
        extra = [a for a in extra if a not in overrides]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args
