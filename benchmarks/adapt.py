"""Lab -> field shift on synthetic leaves: how much a lab model drops in the field, and how much fine-tuning from it
with a few labelled field images per class wins back.

    python benchmarks/adapt.py [--quick] [--out benchmarks/results/adapt.json]

1. Draw a lab set (``data synth``, plain backgrounds) and a field set (``--style field``, another seed): the field
   set is split per class into a pool of labelled images (the first half) and a field test set (the second half).
2. Train a lab model; ``evaluate --data`` on the field test set gives the drop from its lab test accuracy with
   the interval of the difference, and the ECE before/after its temperature on the field images.
3. For each seed and each budget of 5, 10, 20 labelled field images per class, fine-tune from the lab model
   (``model.init_from``) on those images mixed with ``--replay`` lab training images per class (the lab validation
   split stays the validation split: nothing is chosen on field images), and evaluate on the same field test set.
   Mixed, because fine-tuning on the few field images alone (measured first: 20-40 images, 1-2 steps an epoch,
   the epoch chosen on lab validation) lost lab accuracy within one epoch and ended at 0.44-0.62 field accuracy,
   no better than the lab model's 0.56.

Writes field accuracy per budget (each seed's figure with its bootstrap interval, the median over seeds) and the
share of the drop recovered ((acc_k - acc_0) / drop), with the machine, to ``benchmarks/results/adapt.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import describe, machine  # noqa: E402  (benchmarks/ is not a package)

CLASSES = ("healthy", "leaf_spot", "rust", "blight")


def _config(work: Path, name: str, **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "seed": 0, "output_dir": str(work / "runs"), "run_name": name, "device": "cpu",
        "data": {"image_size": 64, "batch_size": 16, "num_workers": 0, "checks": {"enabled": False}},
        "model": {"backbone": "test_resnet"},
        "training": {"epochs": 10, "learning_rate": 0.01, "progress_bar": False},
        "evaluation": {"bootstrap_samples": 1000, "report": False},
        "tracking": {"backends": []},
    }
    for key, value in extra.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return cfg


def _manifest(path: Path, rows: list[tuple[Path, str, str]]) -> Path:
    path.write_text("path,label,split\n" + "".join(f"{p},{label},{split}\n" for p, label, split in rows))
    return path


def _field_rows(field: Path, per_class: int) -> tuple[dict[str, list[Path]], list[tuple[Path, str, str]]]:
    """Per class: the labelled pool (first half) and the field test rows (second half)."""
    pool, test = {}, []
    for name in CLASSES:
        files = sorted((field / name).glob("*.jpg"))
        pool[name] = files[:per_class // 2]
        test += [(p, name, "test") for p in files[per_class // 2:]]
    return pool, test


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "results" / "adapt.json")
    parser.add_argument("--work", type=Path, default=Path("/tmp/plantpheno-adapt"))
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 seed, fewer images and epochs")
    parser.add_argument("--replay", type=int, default=10, metavar="N",
                        help="lab training images per class mixed into each fine-tuning set (-1: all of them)")
    parser.add_argument("--ft-epochs", type=int, default=8, help="fine-tuning epochs")
    parser.add_argument("--lab-run", type=Path, default=None,
                        help="reuse this lab run (trained by an earlier invocation on the same lab set) instead of "
                             "training one; it is copied into the work folder")
    args = parser.parse_args()

    import shutil

    from plantpheno import api
    from plantpheno.data.synth import synthesize_disease
    from plantpheno.reporting import LoggingReporter

    start = time.time()
    saved = None
    if args.lab_run is not None:  # out of the work folder before it is emptied
        saved = Path(shutil.copytree(args.lab_run, Path(str(args.work) + "-lab-run"), dirs_exist_ok=True))
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    lab_n, field_n = (20, 20) if args.quick else (40, 80)
    seeds = (0,) if args.quick else (0, 1, 2)
    budgets = (5, 10) if args.quick else (5, 10, 20)
    epochs, ft_epochs = (2, 1) if args.quick else (10, args.ft_epochs)
    lab = synthesize_disease(args.work / "lab", per_class=lab_n, image_size=64, seed=0)
    field = synthesize_disease(args.work / "field", per_class=field_n, image_size=64, seed=1, style="field")
    pool, test_rows = _field_rows(field, field_n)
    field_test = _manifest(args.work / "field_test.csv", test_rows)
    quiet = LoggingReporter()
    if saved is not None:
        lab_run = api.open_run(shutil.copytree(saved, args.work / "runs" / "default" / "lab"))
        shutil.rmtree(lab_run.path / "eval" / "field", ignore_errors=True)
    else:
        lab_run = api.train(_config(args.work, "lab", data={"root": str(lab)}, training={"epochs": epochs}),
                            reporter=quiet)
    zero = api.evaluate(lab_run, data=field_test, name="field", reporter=quiet)
    drop = zero["shift"]["drop"]["accuracy"]
    results: dict[str, Any] = {"0": [{"seed": None, **_figures(zero)}]}
    for k in budgets:
        results[str(k)] = [_fine_tune(args, lab_run, pool, k, seed, ft_epochs, field_test, quiet) for seed in seeds]
    summary = _summary(results, drop)
    record = {"benchmark": "adapt", "machine": machine(), "machine_summary": describe(machine()),
              "quick": args.quick, "seconds": round(time.time() - start, 1), "lab_run_reused": saved is not None,
              "setup": {"lab_per_class": lab_n, "field_per_class": field_n, "field_test_images": len(test_rows),
                        "image_size": 64, "backbone": "test_resnet", "lab_epochs": epochs,
                        "fine_tune_epochs": ft_epochs, "replay_per_class": args.replay, "seeds": list(seeds)},
              "lab_test_accuracy": drop["in_source"], "drop": drop,
              "calibration_on_field": zero["shift"]["calibration"] | {"reliability": None},
              "separability": zero.get("separability"), "by_budget": results, "summary": summary}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2, default=str) + "\n")
    for line in summary["lines"]:
        print(line)
    print(f"wrote {args.out} ({record['seconds']} s)")


def _fine_tune(args: argparse.Namespace, lab_run: Any, pool: dict[str, list[Path]], k: int, seed: int,
               ft_epochs: int, field_test: Path, quiet: Any) -> dict[str, Any]:
    """Fine-tune from the lab model on k field images per class (+ the lab replay), evaluate on the field test set."""
    import numpy as np

    from plantpheno import api

    rng = np.random.default_rng([seed, k])
    rows = [(Path(r["path"]), r["label"], r["split"]) for r in _read_csv(lab_run.path / "split.csv")]
    replay = []
    for name in CLASSES:
        train = [row for row in rows if row[1] == name and row[2] == "train"]
        n = len(train) if args.replay < 0 else min(args.replay, len(train))
        replay += [train[i] for i in sorted(rng.choice(len(train), n, replace=False))]
    picked = [(p, name, "train") for name in CLASSES for p in rng.choice(pool[name], k, replace=False)]
    held = [row for row in rows if row[2] != "train"]  # lab val (chooses the epoch) and lab test
    manifest = _manifest(args.work / f"ft_{k}_{seed}.csv", held + replay + picked)
    cfg = _config(args.work, f"ft_{k}_{seed}", seed=seed, data={"manifest": str(manifest)},
                  model={"init_from": str(lab_run.path)}, training={"epochs": ft_epochs, "learning_rate": 0.003})
    run = api.train(cfg, reporter=quiet)
    return {"seed": seed, **_figures(api.evaluate(run, data=field_test, name="field", reporter=quiet))}


def _read_csv(path: Path) -> list[dict[str, str]]:
    import csv

    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _figures(metrics: dict[str, Any]) -> dict[str, Any]:
    ci = metrics.get("confidence_interval") or {}
    return {"field_accuracy": metrics["accuracy"], "low": ci.get("low"), "high": ci.get("high"),
            "macro_f1": metrics["macro_f1"], "images": metrics["num_images"]}


def _summary(results: dict[str, list[dict[str, Any]]], drop: dict[str, Any]) -> dict[str, Any]:
    zero = results["0"][0]["field_accuracy"]
    lines = [f"lab test accuracy {drop['in_source']:.3f}; on field {zero:.3f}: drop {drop['drop']:.3f} "
             f"(95 % CI {drop['low']:.3f} to {drop['high']:.3f})"]
    out: dict[str, Any] = {"median_field_accuracy": {}, "recovered_share": {}}
    for k, rows in results.items():
        median = statistics.median(r["field_accuracy"] for r in rows)
        out["median_field_accuracy"][k] = median
        share = (median - zero) / drop["drop"] if drop["drop"] > 0 else None
        out["recovered_share"][k] = share
        each = ", ".join(f"{r['field_accuracy']:.3f} [{r['low']:.3f}, {r['high']:.3f}]" for r in rows)
        lines.append(f"{k:>2}/class: median {median:.3f}" + (f", recovers {share:.0%} of the drop" if share is not None
                                                             else "") + f"  (each seed: {each})")
    out["goal_10_per_class_recovers_half"] = (out["recovered_share"].get("10") or 0) >= 0.5
    out["lines"] = lines
    return out


if __name__ == "__main__":
    main()
