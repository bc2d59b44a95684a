"""``plantpheno evaluate RUN_DIR [--split test]`` and ``plantpheno evaluate RUN_DIR --data DIR_OR_CSV [--class-map
MAP.yaml] [--name NAME] [--calibrate-on DIR_OR_CSV]``; ``--fit-unknowns`` fits an old run's OOD detector first."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate a run's best checkpoint on one of its splits or another source",
                       description="Evaluate a run's best checkpoint on its train, val or test split; writes "
                                   "RUN_DIR/eval/SPLIT/ (metrics.json, reports, plots, predictions.csv) and the HTML "
                                   "report (RUN_DIR/report.html for test, RUN_DIR/report_SPLIT.html for val or "
                                   "train, so no split's report replaces another's). With --data, evaluate it on "
                                   "another image source instead (an image folder or a CSV manifest path,label): "
                                   "writes RUN_DIR/eval/NAME/ with the drop from the test split, per-class drops, "
                                   "calibration, and the images whose labels have no run class (expected unknown).")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--split", choices=("train", "val", "test"), default=None, help="the run's split (default test)")
    p.add_argument("--data", type=Path, default=None, metavar="DIR_OR_CSV",
                   help="another source: an image folder (root/<label>/<image>) or a CSV manifest (path,label)")
    p.add_argument("--class-map", type=Path, default=None, metavar="MAP.yaml",
                   help="with --data: YAML mapping 'source label: run class' (or unknown); labels it does not map "
                        "are expected to be unknown (default: labels named as the run's classes)")
    p.add_argument("--name", default=None, help="with --data: the folder under RUN_DIR/eval/ (default: the data's name)")
    p.add_argument("--calibrate-on", type=Path, default=None, metavar="DIR_OR_CSV",
                   help="with --data: other labelled images of the same source (e.g. its validation images; never "
                        "the evaluated ones), mapped by the same class map: a temperature is fitted on them and the "
                        "ECE of --data after it is reported with its interval")
    p.add_argument("--fit-unknowns", action="store_true",
                   help="first fit the run's OOD detector on its own train/val splits (never test), as train does, "
                        "and store it (ood.json): for a run trained before plantpheno had one; with --data the test "
                        "split is evaluated again with it before the other source")
    p.add_argument("--device", default=None, help="override the run's device (auto, cpu, cuda, ...)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from plantpheno.errors import ArgumentError
    from plantpheno.reporting import ConsoleReporter
    from plantpheno.run.folder import RunDir

    if args.data is None:
        if args.class_map is not None or args.name is not None or args.calibrate_on is not None:
            raise ArgumentError("--class-map, --name and --calibrate-on go with --data (an evaluation on another "
                                "source)")
        from plantpheno.evaluation.report import summary_lines
        from plantpheno.pipeline import evaluate_run

        split = args.split or "test"
        m = evaluate_run(args.run_dir, split=split, device=args.device, reporter=ConsoleReporter(),
                         fit_unknowns=args.fit_unknowns)
        for line in summary_lines(m):
            print(line)
        print(f"reports: {RunDir(args.run_dir).eval(split).path}")
        return 0
    if args.split is not None:
        raise ArgumentError("--split and --data exclude each other: --data evaluates on another source")
    import plantpheno.source_eval as source_eval

    spec = source_eval.SourceSpec(args.data, args.class_map, args.name, args.calibrate_on)
    source_eval.source_name(spec)  # a bad --name fails before the detector's fit
    if args.fit_unknowns:  # the detector first, and the test split scored with it (the drop and AUROC need it)
        from plantpheno.pipeline import evaluate_run

        evaluate_run(args.run_dir, split="test", device=args.device, reporter=ConsoleReporter(), fit_unknowns=True)
    evaluation = source_eval.evaluate_source(args.run_dir, spec, device=args.device, reporter=ConsoleReporter())
    for line in source_eval.summary_lines(evaluation):
        print(line)
    print(f"reports: {RunDir(args.run_dir).eval(str(evaluation.split)).path}")
    return 0
