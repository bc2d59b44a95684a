"""``plantpheno evaluate RUN_DIR [--split test]``."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate a run's best checkpoint on one of its splits",
                       description="Evaluate a run's best checkpoint on its train, val or test split; writes "
                                   "RUN_DIR/eval/SPLIT/ (metrics.json, reports, plots, predictions.csv) and the HTML "
                                   "report (RUN_DIR/report.html for test, RUN_DIR/report_SPLIT.html for val or "
                                   "train, so no split's report replaces another's).")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--split", choices=("train", "val", "test"), default="test")
    p.add_argument("--device", default=None, help="override the run's device (auto, cpu, cuda, ...)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from plantpheno.evaluation.report import summary_lines
    from plantpheno.pipeline import evaluate_run
    from plantpheno.reporting import ConsoleReporter
    from plantpheno.run.folder import RunDir

    m = evaluate_run(args.run_dir, split=args.split, device=args.device, reporter=ConsoleReporter())
    for line in summary_lines(m):
        print(line)
    print(f"reports: {RunDir(args.run_dir).eval(args.split).path}")
    return 0
