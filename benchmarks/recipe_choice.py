"""Choose the PlantVillage recipe's settings on the validation split only (the test split is never evaluated).

    python benchmarks/recipe_choice.py --seeds 3 --candidates \
        "training.fine_tune.epochs=10" "training.fine_tune.epochs=6" "training.fine_tune.epochs=4" \
        "training.fine_tune.epochs=6 training.fine_tune.blocks=1"

Each candidate is configs/plantvillage_pretrained.yaml with the given overrides, trained with seeds 0..N-1 and
``evaluation.split=val``, so the runs never touch the test split. Per candidate: the validation accuracy and loss of
the kept epoch (mean and standard error over seeds) and the wall time. The rule, fixed before any run: the
validation split has 337 images (one image = 0.3 points), so candidates whose mean validation accuracy lies within
one standard error of the best are tied (the "one-standard-error rule"), and the cheapest tied candidate (mean wall
time) is chosen; an exact tie in wall time goes to the lower mean validation loss. Writes
benchmarks/results/recipe_choice.{json,md} with the machine. Then restate the test figures of the chosen recipe
with benchmarks/time_to_accuracy.py.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import describe, machine  # benchmarks/ is not a package
from time_to_accuracy import DATA, plantpheno_run


def _mean_se(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0
    return mean, se


def choose(summary: dict[str, dict[str, Any]]) -> str:
    """The cheapest candidate within one standard error of the best mean validation accuracy."""
    best = max(summary.values(), key=lambda s: s["val_accuracy_mean"])
    floor = best["val_accuracy_mean"] - best["val_accuracy_se"]
    tied = [name for name, s in summary.items() if s["val_accuracy_mean"] >= floor - 1e-12]
    return min(tied, key=lambda n: (summary[n]["wall_s_mean"], summary[n]["val_loss_mean"]))


def _earlier_runs(path: Path, manifest: Path, extra: list[str]) -> dict[tuple[str, int], dict[str, Any]]:
    """The runs of an earlier result file, by (candidate, seed), if it used the same manifest and common overrides."""
    data = json.loads(path.read_text())
    if Path(data["args"]["manifest"]) != manifest or data["args"]["extra"] != extra:
        raise SystemExit(f"--reuse {path}: it used manifest {data['args']['manifest']} and common overrides "
                         f"{data['args']['extra']}, not {manifest} and {extra}; its runs are not comparable")
    found = {}
    for candidate, rs in data["runs"].items():
        for r in rs:
            seed = int(next(o for o in r["overrides"] if o.startswith("seed=")).split("=", 1)[1])
            found[(candidate, seed)] = {k: v for k, v in r.items() if k != "reused"}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", nargs="+", required=True, help="each: space-separated config overrides")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--manifest", type=Path, default=DATA)
    parser.add_argument("--extra", nargs="*", default=[], help="overrides for every candidate (e.g. a smaller size)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "recipe_choice")
    parser.add_argument("--reuse", type=Path, default=None,
                        help="an earlier recipe_choice.json: a (candidate, seed) run it holds with the same manifest "
                             "and common overrides is taken from it instead of being run again (marked 'reused')")
    args = parser.parse_args()
    info = machine()
    earlier = _earlier_runs(args.reuse, args.manifest, args.extra) if args.reuse else {}
    runs: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):  # seeds outermost: a load change on the machine hits every candidate
            for candidate in args.candidates:
                overrides = [f"seed={seed}", "evaluation.split=val", *args.extra, *candidate.split()]
                if (candidate, seed) in earlier:
                    runs.setdefault(candidate, []).append({**earlier[(candidate, seed)], "reused": str(args.reuse)})
                    continue
                r = plantpheno_run(overrides, Path(tmp), "plantvillage_pretrained.yaml", args.manifest)
                r["final_val_accuracy"] = r.pop("test_accuracy")  # evaluation.split=val: the kept checkpoint on val
                runs.setdefault(candidate, []).append(r)
    summary = {}
    for candidate, rs in runs.items():
        acc, acc_se = _mean_se([r["val_accuracy"] for r in rs])
        loss, loss_se = _mean_se([r["val_loss"] for r in rs])
        wall, _ = _mean_se([r["wall_s"] for r in rs])
        summary[candidate] = {"val_accuracy_mean": acc, "val_accuracy_se": acc_se, "val_loss_mean": loss,
                              "val_loss_se": loss_se, "wall_s_mean": wall,
                              "fine_tune_train_s_mean": statistics.fmean(r["fine_tune_train_s"] for r in rs)}
    chosen = choose(summary)
    n_reused = sum("reused" in r for rs in runs.values() for r in rs)
    lines = ["# Recipe choice on the validation split", "", f"Machine: {describe(info)}", "",
             *([f"{n_reused} of the runs were taken from {args.reuse.name} (an earlier invocation on the machine it "
                "records) instead of being run again.", ""] if n_reused else []),
             f"Seeds 0-{args.seeds - 1}; common overrides: {' '.join(args.extra) or 'none'}. Rule: the cheapest "
             "candidate within one standard error of the best mean validation accuracy.", "",
             "| candidate | val accuracy (mean ± SE) | val loss (mean ± SE) | wall s (mean) | fine-tune epochs s |",
             "|---|---|---|---|---|"]
    for name, s in summary.items():
        mark = " **chosen**" if name == chosen else ""
        lines.append(f"| {name}{mark} | {100 * s['val_accuracy_mean']:.2f} ± {100 * s['val_accuracy_se']:.2f} % | "
                     f"{s['val_loss_mean']:.4f} ± {s['val_loss_se']:.4f} | {s['wall_s_mean']:.0f} | "
                     f"{s['fine_tune_train_s_mean']:.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(
        {"machine": info, "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
         "runs": runs, "summary": summary, "chosen": chosen,
         **({"reused_runs_machine": json.loads(args.reuse.read_text())["machine"]} if n_reused else {})},
        indent=2) + "\n")


if __name__ == "__main__":
    main()
