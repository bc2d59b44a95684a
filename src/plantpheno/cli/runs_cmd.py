"""``plantpheno runs list`` and ``plantpheno runs compare RUN_DIR RUN_DIR ...``: tables of local runs.

Reads only the run directories (no tracking library needed).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from plantpheno.errors import RunDirError


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``runs list`` and ``runs compare`` to the top-level subcommands."""
    p = sub.add_parser("runs", help="list and compare the runs in an output directory",
                       description="Tables of the runs recorded under OUTPUT_DIR/<experiment>/<run>/, read from "
                                   "their local files (run.json, config.yaml, metrics.jsonl, eval/).")
    runs_sub = p.add_subparsers(dest="runs_command", required=True, metavar="RUNS_COMMAND")
    ls = runs_sub.add_parser("list", help="one line per run: status, epochs, best value, test metric",
                             description="List every run under OUTPUT_DIR (incomplete runs included).")
    ls.add_argument("--output-dir", type=Path, default=Path("runs"), help="the config's output_dir (default: runs)")
    ls.add_argument("--experiment", default=None, help="only the runs of this experiment")
    ls.add_argument("--json", action="store_true", help="print JSON (every field of every run) instead of a table")
    ls.set_defaults(func=run_list)
    cmp = runs_sub.add_parser("compare", help="runs side by side: differing config values and metrics",
                              description="Compare runs column by column: the config values that differ, seed, "
                                          "backbone, task, status, epochs, best monitored value and every "
                                          "evaluation metric.")
    cmp.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="two or more run directories")
    cmp.add_argument("--json", action="store_true", help="print JSON instead of a table")
    cmp.set_defaults(func=run_compare)


def run_list(args: argparse.Namespace) -> int:
    """Print one table row (or JSON object) per run under ``--output-dir``."""
    from plantpheno.run.listing import experiments, find_runs, format_table, is_run_dir, list_rows

    found = find_runs(args.output_dir, experiment=args.experiment)
    if args.json:
        print(json.dumps([r.to_dict() for r in found], indent=2, allow_nan=False))
        return 0
    if not found:
        known = experiments(args.output_dir)
        where = f"experiment {args.experiment!r} of {args.output_dir}" if args.experiment else str(args.output_dir)
        hint = f" (experiments: {', '.join(known)})" if args.experiment and known else ""
        if not args.experiment and any(is_run_dir(p) for p in args.output_dir.glob("*")):
            hint = (f"; {args.output_dir} is an experiment folder: use --output-dir {args.output_dir.parent} "
                    f"--experiment {args.output_dir.name}")
        print(f"no runs in {where}{hint}", file=sys.stderr)
        return 0
    print(format_table(*list_rows(found)))
    return 0


def run_compare(args: argparse.Namespace) -> int:
    """Print the runs side by side (or as JSON)."""
    from plantpheno.run.listing import compare_runs, format_table, jsonable, read_run

    if len(args.run_dirs) < 2:
        raise RunDirError(f"runs compare needs at least two run directories; got only {args.run_dirs[0]}")
    summaries = [read_run(path) for path in args.run_dirs]
    headers, rows = compare_runs(summaries)
    if args.json:
        payload: dict[str, Any] = {
            "runs": [{"experiment": r.experiment, "name": r.name, "path": str(r.path)} for r in summaries],
            "rows": [{"field": row[0], "values": row[1:]} for row in rows],
        }
        print(json.dumps(jsonable(payload), indent=2, allow_nan=False))
        return 0
    print(format_table(headers, rows))
    return 0
