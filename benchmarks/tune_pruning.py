"""Benchmark: TPE + median pruning against random search without pruning, on the same trial budget.

Both searches tune the same space (learning rate, weight decay, optimizer, dropout) of the same small
model on the same synthetic leaf-disease images (``test_resnet`` at 32 px on the CPU), with the
same number of trials and the same seed. For each it records, in trial order (one worker):

* ``epochs_to_best``: training epochs spent (all trials, pruned ones included) until the study first
  reached its own best value, counting the best trial up to its best epoch;
* ``epochs_to_common``: the same for the worse of the two best values (a target both reached);
* ``total_epochs``, wall-clock seconds, trials completed and pruned, and the best value.

Results go to ``benchmarks/results/tune_pruning.json`` (and a printed table).

    .venv/bin/python benchmarks/tune_pruning.py [--trials 12] [--epochs 4] [--seeds 0 1 2] [--min-epochs 2]

With the same seed both searches draw the same first ``--startup`` trials (TPE starts with random
sampling); they differ from there on.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, machine  # benchmarks/ is not a package; records the machine

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SPACE = {
    "training.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    "training.weight_decay": {"type": "float", "low": 1e-6, "high": 1e-1, "log": True},
    "training.optimizer": {"type": "categorical", "choices": ["adamw", "sgd"]},
    "model.dropout": {"type": "float", "low": 0.0, "high": 0.5},
}
METHODS = {"tpe+median": {"sampler": "tpe", "pruner": "median"}, "random": {"sampler": "random", "pruner": "none"}}


def base_config(data: Path, out: Path, *, epochs: int, seed: int) -> Any:
    from plantpheno.config import validate_config

    return validate_config({
        "seed": seed, "output_dir": str(out), "experiment": "bench", "device": "cpu",
        "data": {"root": str(data), "image_size": 32, "batch_size": 8, "num_workers": 0},
        "model": {"backbone": "test_resnet"},
        "training": {"epochs": epochs, "scheduler": "cosine", "progress_bar": False},
        "evaluation": {"bootstrap_samples": 0}, "tracking": {"system_metrics_interval": 0},
    })


def run_method(name: str, config: Any, *, trials: int, metric: str, startup: int, min_epochs: int) -> dict[str, Any]:
    from plantpheno.tuning import TuneSettings, parse_space, tune

    settings = TuneSettings(study=name.replace("+", "-"), trials=trials, metric=metric, startup_trials=startup,
                            min_epochs=min_epochs, **METHODS[name])
    start = time.perf_counter()
    result = tune(config, parse_space(SPACE), settings=settings)
    wall = time.perf_counter() - start
    return {"method": name, "wall_s": round(wall, 1), "best_value": result.best_value, "best_trial": result.best_trial,
            "complete": result.counts["COMPLETE"], "pruned": result.counts["PRUNED"], "failed": result.counts["FAIL"],
            "history": history(result.storage, settings.study, metric=metric)}


def history(storage_url: str, study_name: str, *, metric: str) -> list[dict[str, Any]]:
    """Per trial in order: state, epochs trained, the epoch of its best value, and that value."""
    import optuna

    from plantpheno.tuning.storage import open_storage

    study = optuna.load_study(study_name=study_name, storage=open_storage(storage_url))
    rows = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        run = Path(t.user_attrs["run_dir"]) / "metrics.jsonl"
        values = [json.loads(line)[metric] for line in run.read_text().splitlines()] if run.is_file() else []
        rows.append({"number": t.number, "state": t.state.name, "epochs": len(values), "values": values,
                     "params": t.params})
    return rows


def epochs_to_reach(rows: list[dict[str, Any]], target: float, *, maximize: bool) -> int | None:
    """Epochs trained, over all trials in order, until some epoch's value first reached ``target``."""
    spent = 0
    for row in rows:
        for i, value in enumerate(row["values"], start=1):
            if value is not None and (value >= target if maximize else value <= target):
                return spent + i
        spent += row["epochs"]
    return None


def summarize(results: list[dict[str, Any]], *, maximize: bool) -> None:
    bests = [r["best_value"] for r in results if r["best_value"] is not None]
    common = (min(bests) if maximize else max(bests)) if len(bests) == len(results) else None
    for r in results:
        rows = r.pop("history")
        r["total_epochs"] = sum(row["epochs"] for row in rows)
        r["epochs_to_best"] = epochs_to_reach(rows, r["best_value"], maximize=maximize)
        r["common_target"] = common
        r["epochs_to_common"] = None if common is None else epochs_to_reach(rows, common, maximize=maximize)
        r["trials"] = [{k: row[k] for k in ("number", "state", "epochs")} for row in rows]


def means(results: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per method, the mean over seeds of the best value and of the epoch counts."""
    keys = ("best_value", "total_epochs", "epochs_to_best", "epochs_to_common", "wall_s")
    out = {}
    for method in METHODS:
        rows = [r for r in results if r["method"] == method]
        out[method] = {k: sum(r[k] for r in rows) / len(rows) for k in keys
                       if rows and all(r[k] is not None for r in rows)}
    return out


def table(results: list[dict[str, Any]], metric: str) -> str:
    head = (f"{'seed':>4}  {'method':<11} {'best ' + metric:>14} {'complete':>8} {'pruned':>6} {'epochs':>6} "
            f"{'to best':>7} {'to common':>9} {'wall s':>7}")
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(f"{r['seed']:>4}  {r['method']:<11} {r['best_value']:>14.4f} {r['complete']:>8} {r['pruned']:>6} "
                     f"{r['total_epochs']:>6} {r['epochs_to_best']!s:>7} {r['epochs_to_common']!s:>9} "
                     f"{r['wall_s']:>7}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=12, help="trials per search (default 12)")
    p.add_argument("--epochs", type=int, default=4, help="epochs per trial (default 4)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one pair of searches per seed")
    p.add_argument("--metric", default="val/loss", help="objective (default val/loss: smoother than F1 on ~20 images)")
    p.add_argument("--startup", type=int, default=4, help="TPE random start-up trials, median pruner warm-up trials")
    p.add_argument("--min-epochs", type=int, default=2, help="epochs every trial trains before it can be pruned")
    p.add_argument("--per-class", type=int, default=32, help="synthetic images per class (4 classes)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steadier on a shared machine)")
    p.add_argument("--out", type=Path, default=RESULTS / "tune_pruning.json")
    args = p.parse_args(argv)

    import optuna
    import torch

    from plantpheno.data.synth import synthesize_disease

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(args.threads)
    maximize = not args.metric.endswith(("loss", "mae", "rmse"))
    results = []
    with tempfile.TemporaryDirectory(prefix="tune-bench-") as tmp:
        data = synthesize_disease(Path(tmp) / "leaves", per_class=args.per_class, image_size=48, seed=1)
        for seed in args.seeds:
            config = base_config(data, Path(tmp) / f"runs-{seed}", epochs=args.epochs, seed=seed)
            pair = [run_method(m, config, trials=args.trials, metric=args.metric, startup=args.startup,
                               min_epochs=args.min_epochs) for m in METHODS]
            summarize(pair, maximize=maximize)
            results += [{"seed": seed, **r} for r in pair]
    report = {"benchmark": "tune_pruning", "metric": args.metric, "trials": args.trials, "epochs": args.epochs,
              "startup_trials": args.startup, "min_epochs": args.min_epochs, "images": 4 * args.per_class,
              "space": SPACE, "mean": means(results),
              "machine": {**machine(), "optuna": optuna.__version__, "torch_threads": args.threads},
              "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(results, args.metric))
    print("mean over seeds: " + "; ".join(f"{m}: " + ", ".join(f"{k} {v:.4g}" for k, v in row.items())
                                          for m, row in report["mean"].items()))
    print(f"Machine: {describe(report['machine'])}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
