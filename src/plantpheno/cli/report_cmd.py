"""``plantpheno report RUN_DIR [--split S]``: rebuild a run's self-contained HTML report."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="rebuild RUN_DIR/report.html (one self-contained page per evaluated split)",
                       description="Rebuild RUN_DIR/report.html from the run's files and its best checkpoint: "
                                   "summary with the baseline and verdict, model card, training curves, per-class "
                                   "scores, confusion matrix, worst errors with Grad-CAM, calibration, data-check "
                                   "findings. The split must have been evaluated (train and evaluate write it); "
                                   "the test split's report is report.html, another split's report_SPLIT.html.")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--split", choices=("train", "val", "test"), default=None,
                   help="evaluated split to report (default: the config's evaluation.split)")
    p.add_argument("--device", default="cpu", help="device for the Grad-CAM maps (cpu, cuda, ...)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from plantpheno.pipeline import report_run

    path = report_run(args.run_dir, split=args.split, device=args.device)
    print(f"report: {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0
