"""``plantpheno data suggest RUN --pool DIR_OR_CSV --budget N``: which images to label next."""

from __future__ import annotations

import argparse
from pathlib import Path

from plantpheno.cli.options import integer

STRATEGY_NAMES = ("random", "margin", "entropy", "kcenter", "cluster-margin", "badge", "disagreement", "typiclust",
                  "probcover", "typical-margin", "typical-badge")
SHOWN_SKIPPED = 5


def register(data_sub: argparse._SubParsersAction) -> None:
    s = data_sub.add_parser(
        "suggest", help="rank unlabelled images: which to label next",
        description="Rank the images of a pool (an image folder, or a CSV with a path column) by how much labelling "
                    "each would teach the run, and write suggestions.csv (path, rank, score, reason, prediction, "
                    "nearest labelled image), skipped.csv, recheck.csv and a self-contained contact sheet "
                    "suggestions.html. Images in the run's splits and copies of labelled images are left out; "
                    "unreadable ones are listed and skipped. The run's features of the pool are cached, so a second "
                    "round takes seconds.")
    s.add_argument("run", type=Path, metavar="RUN", help="a run directory (OUTPUT_DIR/<experiment>/<run>)")
    s.add_argument("--pool", type=Path, required=True, metavar="DIR_OR_CSV", help="the unlabelled images")
    s.add_argument("--budget", type=integer(1, 100_000), required=True, metavar="N", help="images to suggest")
    s.add_argument("--strategy", choices=STRATEGY_NAMES, default=None,
                   help="default for classes: margin when N is at most the number of classes, typical-badge above; "
                        "for traits: badge (each chosen by the benchmark on validation data)")
    s.add_argument("--recheck", type=integer(0, 100_000), default=0, metavar="K",
                   help="also list the K labelled images most likely mislabelled (classes)")
    s.add_argument("--out", type=Path, default=None, metavar="DIR", help="default: RUN/suggestions/")
    s.add_argument("--seed", type=integer(0, 2**32 - 1), default=0)
    s.add_argument("--device", default="cpu", help="cpu (default), cuda, mps or auto")
    s.set_defaults(func=run_suggest)


def run_suggest(args: argparse.Namespace) -> int:
    from plantpheno.labelling.suggest import suggest
    from plantpheno.reporting import ConsoleReporter

    result = suggest(args.run, args.pool, budget=args.budget, strategy=args.strategy, recheck=args.recheck,
                     out=args.out, seed=args.seed, device=args.device, reporter=ConsoleReporter())
    for s in result.suggestions[:10]:
        print(f"{s.rank:>4}  {s.path}  {s.reason}")
    if len(result.suggestions) > 10:
        print(f"      ... {len(result.suggestions) - 10} more in {result.files['suggestions']}")
    if result.skipped:
        print(f"skipped {len(result.skipped)} pool image(s) (all in {result.files['skipped']}):")
        for path, why in result.skipped[:SHOWN_SKIPPED]:
            print(f"  {path}: {why}")
    for r in result.recheck:
        print(f"recheck  {r.path}  given {r.given}, suggested {r.suggested} ({r.given_probability:.0%} for the "
              f"given label)")
    print(f"{len(result.suggestions)} of {result.pool_size} pool images suggested ({result.strategy}) in "
          f"{result.seconds:.1f} s: {result.files['suggestions']}; contact sheet {result.files['sheet']}")
    return 0
