"""Choose the PlantVillage recipe's settings on the validation split only (the test split is never evaluated).

    python benchmarks/recipe_choice.py --seeds 3 --candidates \
        "training.fine_tune.epochs=10" "training.fine_tune.epochs=6" "training.fine_tune.epochs=4" \
        "training.fine_tune.epochs=6 training.fine_tune.blocks=1"

Each candidate is the recipe classify (PlantVillage subset) with the given overrides, trained with seeds 0..N-1 and
``evaluation.split=val``, so the runs never touch the test split. Per candidate: the validation accuracy and loss of
the kept epoch (mean and standard error over seeds) and the wall time. The rule, fixed before any run: the
validation split has 337 images (one image = 0.3 points), so candidates whose mean validation accuracy lies within
one standard error of the best are tied (the "one-standard-error rule"), and the cheapest tied candidate (mean wall
time) is chosen; an exact tie in wall time goes to the lower mean validation loss. Writes
benchmarks/results/recipe_choice.{json,md} with the machine. Then restate the test figures of the chosen recipe
with benchmarks/time_to_accuracy.py.

    python benchmarks/recipe_choice.py --folds 5 --candidates "training.fine_tune.blocks=2" "training.fine_tune.blocks=1"

``--folds K`` chooses by K-fold cross-validation on the train and val images instead (the test split stays out):
fold k is the validation split of run k and the other folds train it, with seed 0 (``--seeds`` is ignored), so
every train+val image is validated once (1907 instead of 337 on the PlantVillage subset). Folds keep groups
together: the manifest's ``group`` column, else, for the bundled PlantVillage subset, the 20 photo-order blocks
per class its README's split was cut from (rebuilt from its manifest.csv and checked: each block lies in one split),
so photos of one leaf never sit on both sides. The same rule then runs over the K folds. Writes
benchmarks/results/recipe_choice_cv.{json,md} unless ``--out`` says otherwise.
"""

from __future__ import annotations

import argparse
import csv
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


def split_blocks(manifest: Path, blocks: int = 20) -> dict[str, str]:
    """path -> group for the bundled PlantVillage subset: per class, its images in (photo code, photo number) order
    cut into ``blocks`` contiguous blocks, as its README says the split was made (read from manifest.csv beside
    ``manifest``); every block must lie in one split, or the rebuilt blocks are not the split's."""
    import numpy as np

    meta = manifest.parent / "manifest.csv"
    if not meta.is_file():
        raise SystemExit(f"{manifest} has no group column and no manifest.csv beside it ({meta}) to rebuild the "
                         "PlantVillage subset's blocks from; add a group column to cross-validate")
    with meta.open(newline="") as f:
        rows = list(csv.DictReader(f))
    by_class: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_class.setdefault(row["label"], []).append(row)
    groups = {}
    for label, rs in by_class.items():
        rs.sort(key=lambda r: (r["photo_code"], float(r["photo_number"])))
        for b, chunk in enumerate(np.array_split(np.arange(len(rs)), blocks)):
            splits = {rs[i]["split"] for i in chunk}
            if len(splits) > 1:
                raise SystemExit(f"{meta}: block {b} of {label} spans splits {sorted(splits)}; the rebuilt blocks "
                                 "are not the ones the split was cut from")
            for i in chunk:
                groups[rs[i]["path"]] = f"{label}/block{b:02d}"
    return groups


def fold_manifests(manifest: Path, folds: int, out: Path) -> list[Path]:
    """K manifests over the train and val rows of ``manifest`` (absolute paths, a group column): in manifest k the
    rows of fold k are ``val`` and the rest ``train``; test rows keep their split (never evaluated here)."""
    from plantpheno.data.doctor.folds import group_folds

    with manifest.open(newline="") as f:
        rows = list(csv.DictReader(f))
    # a row without a group is a group of its own
    groups = ({r["path"]: r["group"] or r["path"] for r in rows} if rows and "group" in rows[0]
              else split_blocks(manifest))
    pool = [r for r in rows if r["split"] in ("train", "val")]
    labels = sorted({r["label"] for r in pool})
    pairs = group_folds([labels.index(r["label"]) for r in pool], [groups[r["path"]] for r in pool], folds=folds,
                        seed=0)
    if len(pairs) != folds:
        raise SystemExit(f"{manifest}: {len({groups[r['path']] for r in pool})} groups in train+val, too few for "
                         f"{folds} folds")
    paths = []
    for k, (_, held) in enumerate(pairs):
        held_set = set(held.tolist())
        path = out / f"fold{k}.csv"
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label", "split", "group"])
            index = 0
            for r in rows:
                split = r["split"]
                if split in ("train", "val"):
                    split = "val" if index in held_set else "train"
                    index += 1
                writer.writerow([str((manifest.parent / r["path"]).resolve()), r["label"], split, groups[r["path"]]])
        paths.append(path)
    return paths


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
    parser.add_argument("--folds", type=int, default=0,
                        help="K > 1: choose by group K-fold cross-validation on train+val (seed 0) instead of seeds")
    args = parser.parse_args()
    if args.folds:
        if args.folds < 2 or args.reuse:
            raise SystemExit("--folds needs K >= 2 and cannot be combined with --reuse")
        if args.out == parser.get_default("out"):
            args.out = HERE / "results" / "recipe_choice_cv"
    info = machine()
    earlier = _earlier_runs(args.reuse, args.manifest, args.extra) if args.reuse else {}
    runs: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        # replicates outermost (seeds, or folds with seed 0): a load change on the machine hits every candidate
        replicates = ([(f"fold {k}", 0, m) for k, m in enumerate(fold_manifests(args.manifest, args.folds, Path(tmp)))]
                      if args.folds else [(f"seed {seed}", seed, args.manifest) for seed in range(args.seeds)])
        for name, seed, manifest in replicates:
            for candidate in args.candidates:
                overrides = [f"seed={seed}", "evaluation.split=val", *args.extra, *candidate.split()]
                if (candidate, seed) in earlier:
                    runs.setdefault(candidate, []).append({**earlier[(candidate, seed)], "reused": str(args.reuse)})
                    continue
                r = plantpheno_run(overrides, Path(tmp), "classify", manifest)
                r["final_val_accuracy"] = r.pop("test_accuracy")  # evaluation.split=val: the kept checkpoint on val
                r["replicate"] = name
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
    what = (f"Group {args.folds}-fold cross-validation on the train and val images (fold k validates run k; seed 0)"
            if args.folds else f"Seeds 0-{args.seeds - 1}")
    lines = [f"# Recipe choice on the validation split{' by cross-validation' if args.folds else ''}", "",
             f"Machine: {describe(info)}", "",
             *([(f"{n_reused} of the runs were taken from {args.reuse.name} (an earlier invocation on the machine it "
                 "records) instead of being run again."), ""] if n_reused else []),
             (f"{what}; common overrides: {' '.join(args.extra) or 'none'}. Rule: the cheapest "
              "candidate within one standard error of the best mean validation accuracy."), "",
             "| candidate | val accuracy (mean ± SE) | val loss (mean ± SE) | wall s (mean) | fine-tune epochs s |",
             "|---|---|---|---|---|"]
    for name, s in summary.items():
        mark = " **chosen**" if name == chosen else ""
        lines.append(f"| {name}{mark} | {100 * s['val_accuracy_mean']:.2f} ± {100 * s['val_accuracy_se']:.2f} % | "
                     f"{s['val_loss_mean']:.4f} ± {s['val_loss_se']:.4f} | {s['wall_s_mean']:.0f} | "
                     f"{s['fine_tune_train_s_mean']:.0f} |")
    names = list(runs)
    lines += ["", "Validation accuracy of the kept epoch, per replicate:", "",
              "| replicate | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for i, r0 in enumerate(runs[names[0]]):
        label = r0.get("replicate") or next(o for o in r0["overrides"] if o.startswith("seed="))
        lines.append(f"| {label} | " + " | ".join(f"{100 * runs[n][i]['val_accuracy']:.2f} %" for n in names) + " |")
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
