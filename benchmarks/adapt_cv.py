"""``benchmarks/adapt.py --cv K``: 10 labelled field images a class IN TOTAL, the recipe and its length chosen by
K-fold cross-validation on those 10, never on a field test image (issue 29's goal at 10 labels a class).

THE RULE (written down and committed before any run of it; results/adapt_cv.md reports what it gave):

1. Each seed draws its own 10 labelled field images a class (the images ``adapt.py`` draws at budget 10 for that
   seed) and its lab replay, as a user has them. The 10 a class are cut into K stratified folds: each class's images
   shuffled with the seed and dealt round-robin, so a fold holds 10/K a class.
2. Each candidate of :data:`CANDIDATES` (listed most conservative first) trains K times from the lab model
   (``model.init_from``): on the other K-1 folds (+ its lab replay), the held-out fold as the run's validation split,
   for its full length at a CONSTANT learning rate in each phase (``training.scheduler: none``) and with
   ``training.keep: last`` (the blocks phase starts from the last head epoch, not one the held-out fold liked), so
   the first e epochs of that run are exactly an e-epoch run on the same images (:func:`schedule`): any point of
   the curve is a schedule one can retrain with. Its per-epoch validation NLL (``val/loss``: cross-entropy, no
   label smoothing, mean over the fold) comes from the run's ``metrics.jsonl``.
3. Each (candidate, epochs) pair scores the mean of its K fold NLLs. The best pair has the lowest mean; its standard
   error is the standard deviation of its K fold NLLs / sqrt(K). Chosen: the FIRST candidate in
   :data:`CANDIDATES` order with any epoch count whose mean is within one standard error of the best, at the FEWEST
   such epochs (fewer steps fit 10 images less; a less conservative candidate must beat the others by more than
   the noise of the folds).
4. The chosen candidate is retrained on all 10 a class (+ its replay) for that many epochs with
   ``training.keep: last``; its validation split is the lab model's validation images (they fit only the
   temperature: no epoch is picked there). It is then evaluated on the field TEST images, the only time they are read.

No field label beyond the 10 a class is used anywhere.

The candidates: the head alone on cached features (seconds a fold), the same with the BatchNorm statistics
re-estimated on the run's training images (``model.bn_stats: recompute``, AdaBN), and the ``classify_adapt`` recipe's
head then its last 2 blocks. Fixed from a first, stopped run of this rule (seed 0, folds 0-2; CV NLL only, no field
test figure existed): AdaBN's candidates had fold NLLs of 1.06-2.23 against the kept statistics' 0.60-1.41 and two
more AdaBN variants (no lab replay; head rate 0.003) were no better (1.19-2.31), so one AdaBN candidate stays and the
recipe's blocks phase takes the others' place. Why AdaBN hurts here: the lab model's blocks were fine-tuned with the
BatchNorm statistics fixed at ImageNet's, so its layers expect ImageNet's statistics, not the lab's; re-estimated
on the lab model's OWN training images they took its lab validation accuracy from 1.000 to 0.583 (36 images).
"""

from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

# the head-only curves of results/adapt_explore_seed0.json were flat from epoch 9 of 20 on: 30 leaves room
_HEAD = {"training.epochs": 30, "training.fine_tune.epochs": 0, "training.scheduler": "none",
         "training.warmup_epochs": 0, "training.monitor": "val/loss", "training.keep": "last"}
# candidate -> (classify_adapt overrides at full length, lab replay images a class); cheapest first (the rule
# prefers the earlier of two within one standard error): the head alone, with the lab model's BatchNorm statistics
# and with re-estimated ones, then the recipe's head (10 epochs) and last 2 blocks (10 more, its rate 0.0005)
CANDIDATES: dict[str, tuple[dict[str, Any], int]] = {
    "head": (_HEAD, 10),
    "head_bn": (_HEAD | {"model.bn_stats": "recompute"}, 10),
    "head_then_blocks": (_HEAD | {"training.epochs": 10, "training.fine_tune.epochs": 10}, 10),
}
QUICK = ("head", "head_then_blocks")
QUICK_LENGTH = {"training.epochs": 3, "training.fine_tune.epochs": 0}  # --quick: 3 epochs; 2 + 1 with blocks

Row = tuple[Path, str, str]


def folds(picked: list[Row], k: int, seed: int) -> list[list[Row]]:
    """``picked`` (the labelled field rows) cut into ``k`` stratified folds: each class's rows shuffled with
    ``seed``, dealt round-robin."""
    rng = np.random.default_rng([seed, 29, k])
    out: list[list[Row]] = [[] for _ in range(k)]
    for name in sorted({label for _, label, _ in picked}):
        rows = [row for row in picked if row[1] == name]
        for i, j in enumerate(rng.permutation(len(rows))):
            out[i % k].append(rows[j])
    return out


def full_length(spec: dict[str, Any], quick: bool) -> dict[str, Any]:
    """A candidate's overrides at its full length (--quick: 3 epochs in all)."""
    if not quick:
        return spec
    blocks = spec["training.fine_tune.epochs"] > 0
    return spec | ({"training.epochs": 2, "training.fine_tune.epochs": 1} if blocks else QUICK_LENGTH)


def schedule(spec: dict[str, Any], epochs: int) -> dict[str, Any]:
    """The overrides of an ``epochs``-epoch run of a candidate whose full length ``spec`` gives: the first
    ``epochs`` epochs of the full run (head epochs first, then blocks epochs)."""
    head, blocks = spec["training.epochs"], spec["training.fine_tune.epochs"]
    if epochs > head + blocks or epochs < 1:
        raise ValueError(f"{epochs} epochs: the candidate runs 1 to {head + blocks}")
    if epochs <= head:
        return spec | {"training.epochs": epochs, "training.fine_tune.epochs": 0}
    return spec | {"training.epochs": head, "training.fine_tune.epochs": epochs - head}


def choose(curves: dict[str, list[list[float]]]) -> dict[str, Any]:
    """The rule's step 3. ``curves``: candidate (in :data:`CANDIDATES` order) -> one per-epoch NLL list per fold.
    Returns the chosen candidate and epochs, the best pair, its standard error and each candidate's mean curve."""
    table: dict[str, list[tuple[float, float]]] = {}
    for name, per_fold in curves.items():
        epochs = min(len(f) for f in per_fold)
        table[name] = [_mean_se([f[e] for f in per_fold]) for e in range(epochs)]
    pairs = [(name, e) for name, rows in table.items() for e in range(len(rows))]
    best = min(pairs, key=lambda p: table[p[0]][p[1]][0])  # the first of equals: the earlier candidate, fewer epochs
    mean, se = table[best[0]][best[1]]
    chosen = next(p for p in pairs if table[p[0]][p[1]][0] <= mean + se)  # pairs run candidate by candidate
    return {"candidate": chosen[0], "epochs": chosen[1] + 1, "best": {"candidate": best[0], "epochs": best[1] + 1,
            "mean_nll": mean, "se": se}, "bound": mean + se,
            "curves": {name: [{"epochs": e + 1, "mean_nll": m, "se": s} for e, (m, s) in enumerate(rows)]
                       for name, rows in table.items()}}


def _mean_se(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0)


def val_nll_curve(run_dir: Path) -> list[float]:
    """The run's per-epoch validation NLL, from its metrics.jsonl."""
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [float(json.loads(line)["val/loss"]) for line in lines if line.strip()]


def cross_validate(args: Any, lab_run: Any, pool: dict[str, list[Path]], field_test: Path, *,
                   store: Any) -> dict[str, Any]:
    """Steps 1-4 for every seed: each seed's CV table, choice, and the retrained run's field test figures."""
    import adapt
    from plantpheno import api

    names = [n for n in CANDIDATES if n in (args.candidates or (QUICK if args.quick else CANDIDATES))]
    specs = {n: full_length(CANDIDATES[n][0], args.quick) for n in names}
    out = []
    for seed in args.seeds or ((0,) if args.quick else (0, 1, 2)):
        start = time.time()
        replay, picked, rows = adapt.draw(args.replay, lab_run, pool, adapt.GOAL_LABELLED, seed)
        lab_val = [row for row in rows if row[2] == "val"]
        lab_test = [row for row in rows if row[2] == "test"]
        cut = folds(picked, args.cv, seed)
        curves: dict[str, list[list[float]]] = {name: [] for name in names}
        for f, held in enumerate(cut):  # folds outside: a fold's candidates with the same images share a pass
            train = [row for g, fold in enumerate(cut) if g != f for row in fold]
            for name in names:
                run = _train(args, lab_run, f"cv_{name}_s{seed}_f{f}", seed, specs[name],
                             _replay(replay, CANDIDATES[name][1]) + train + [(p, label, "val") for p, label, _ in held]
                             + lab_test,
                             store=store)
                curves[name].append(val_nll_curve(run.run_dir))
        picked_choice = choose(curves)
        name, epochs = picked_choice["candidate"], picked_choice["epochs"]
        final = _train(args, lab_run, f"final_{name}_s{seed}", seed, schedule(specs[name], epochs),
                       _replay(replay, CANDIDATES[name][1]) + picked + lab_val + lab_test, store=store)
        found = api.evaluate(final.run_dir, data=field_test, name="field", verbose=False)
        out.append({"seed": seed, "folds": args.cv, "cv_nll_per_fold": curves, "choice": picked_choice,
                    "chosen": name, "epochs": epochs, **adapt._figures(found),
                    "lab_test_after": adapt._figures(final.metrics)["field_accuracy"],
                    "calibration": adapt._ece(found["shift"]["calibration"]),
                    "seconds": round(time.time() - start, 1)})
        print(f"seed {seed}: chose {name} x {epochs} epochs; field test {out[-1]['field_accuracy']:.3f}", flush=True)
    return {"candidates": {n: {"overrides": specs[n], "replay_per_class": CANDIDATES[n][1]} for n in names},
            "max_epochs": max(s["training.epochs"] + s["training.fine_tune.epochs"] for s in specs.values()),
            "seeds": out}


def _replay(rows: list[Row], n: int) -> list[Row]:
    """The first ``n`` replay rows a class (the draw is per class, in class order)."""
    kept: dict[str, int] = {}
    out = []
    for row in rows:
        if kept.get(row[1], 0) < n:
            kept[row[1]] = kept.get(row[1], 0) + 1
            out.append(row)
    return out


def _train(args: Any, lab_run: Any, name: str, seed: int, spec: dict[str, Any], rows: list[Row], *,
           store: Any) -> Any:
    import adapt
    from plantpheno import api

    manifest = adapt._manifest(args.work / f"{name}.csv", rows)
    config = api.load_config("classify_adapt", adapt._common(args.work, name, seed, args.quick) | spec | {
        "data.manifest": str(manifest), "model.init_from": str(lab_run.path)})
    return adapt._train(config, store)


def summary(result: dict[str, Any], zero: dict[str, Any], drop: dict[str, Any]) -> dict[str, Any]:
    """Medians over seeds of the chosen protocol's field test accuracy, and the share of the drop recovered."""
    seeds = result["seeds"]
    median = statistics.median(s["field_accuracy"] for s in seeds)
    share = (median - zero["accuracy"]) / drop["drop"] if drop["drop"] > 0 else None
    return {"median_field_accuracy": median, "recovered_share": share,
            "median_lab_test_after": statistics.median(s["lab_test_after"] for s in seeds),
            "goal_10_per_class_recovers_half": share is not None and share >= 0.5,
            "needed_for_half": zero["accuracy"] + drop["drop"] / 2}


def markdown(record: dict[str, Any]) -> str:
    """results/adapt_cv.md: the machine, the drop, each seed's CV table and choice, the field test figures, the
    verdict."""
    d, zero, s, cv = record["drop"], record["lab_model_on_field"], record["summary"], record["cv"]
    out = ["# Adapting with 10 labelled field images a class IN TOTAL, chosen by cross-validation "
           "(benchmarks/adapt.py --cv)", "",
           f"Machine: {record['machine_summary']}; {record['seconds']} s; quick={record['quick']}.", "",
           f"Lab model (classify recipe, {record['setup']['backbone']}, {record['setup']['image_size']} px): lab test "
           f"{d['in_source']:.3f}, field test {zero['field_accuracy']:.3f} [{zero['low']:.3f}, {zero['high']:.3f}]: "
           f"drop {d['drop']:.3f} (95 % CI {d['low']:.3f} to {d['high']:.3f}); half the drop back needs a field test "
           f"median of {s['needed_for_half']:.3f}.", "",
           f"Protocol ({cv['seeds'][0]['folds']}-fold CV on the 10 a class, the rule in benchmarks/adapt_cv.py): "
           "each candidate's per-epoch NLL on the held-out folds (constant learning rate in each phase, up to "
           f"{cv['max_epochs']} epochs; with blocks, the head's epochs first); the first candidate (listed order) "
           "within one standard error of the best (candidate, epochs), at its fewest such epochs; retrained on all "
           "10 a class with training.keep: last, then evaluated on the field test images.", "",
           "| seed | candidate | CV NLL at its best epochs (mean +/- SE) | epochs there | chosen |",
           "|---|---|---|---|---|"]
    for row in cv["seeds"]:
        choice = row["choice"]
        for name, curve in choice["curves"].items():
            best = min(curve, key=lambda c: c["mean_nll"])
            mark = f"**{row['epochs']} epochs**" if name == row["chosen"] else ""
            out.append(f"| {row['seed']} | {name} | {best['mean_nll']:.3f} +/- {best['se']:.3f} | {best['epochs']} | "
                       f"{mark} |")
    out += ["", "| seed | chosen (epochs) | field test [95 % CI] | lab test after | ECE raw on field |",
            "|---|---|---|---|---|"]
    for row in cv["seeds"]:
        ece = row["calibration"]["ece_before"]
        out.append(f"| {row['seed']} | {row['chosen']} ({row['epochs']}) | {row['field_accuracy']:.3f} "
                   f"[{row['low']:.3f}, {row['high']:.3f}] | {row['lab_test_after']:.3f} | "
                   f"{ece['estimate']:.3f} [{ece['low']:.3f}, {ece['high']:.3f}] |")
    share = s["recovered_share"]
    verdict = "MET" if s["goal_10_per_class_recovers_half"] else "NOT met"
    out += ["", f"Median field test accuracy {s['median_field_accuracy']:.3f} (lab test after "
            f"{s['median_lab_test_after']:.3f}): {'-' if share is None else f'{share:.0%}'} of the drop recovered.",
            "", f"Goal (10 labelled field images a class IN TOTAL recover at least half of the drop): {verdict}"
            + (f" (median {s['median_field_accuracy']:.3f} against {s['needed_for_half']:.3f} needed)."), ""]
    return "\n".join(out)
