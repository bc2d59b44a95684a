"""Lab -> field shift on synthetic leaves: how much a lab model drops in the field, and how much fine-tuning from it
with a few labelled field images per class wins back (the ``classify_adapt`` recipe against other candidates).

    python benchmarks/adapt.py [--quick] [--out benchmarks/results/adapt.json]

1. Draw a lab set (``data synth``, plain backgrounds) and a field set (``--style field``, another seed). Per class the
   field set is cut into a pool of labelled images (fine-tuning draws from it), a few field VALIDATION images (the
   epoch and the candidate are chosen on them) and the field TEST images (only reported).
2. Train a lab model with the ``classify`` recipe (bundled ImageNet EfficientNet-Lite0, frozen backbone and cached
   features, then its last 2 blocks fine-tuned); ``evaluate --data`` on the field test set gives the drop from its lab
   test accuracy with the interval of the difference, and the ECE before/after its temperature on field images.
3. The choice, on field VALIDATION images only: each candidate fine-tunes from the lab model (``model.init_from``) on
   10 labelled field images per class plus ``--replay`` lab training images per class (3 seeds); the run's
   validation split is the field validation images (its epoch is chosen there), its test split the lab test
   images (what adaptation cost in the lab). Candidates (``DEFAULT`` of ``EXPLORED``, cheapest first): the head alone
   (the ``classify_adapt`` recipe) and variants of head then the last 2 blocks. The rule (:func:`choose`): the lowest
   mean field validation NLL, then the cheapest candidate within one standard error of it.
4. The chosen candidate is also run with 5 and 20 images per class; then every run is evaluated on the field TEST
   images (``evaluate --data``), the other candidate's too, for the record.

``--fixed CANDIDATE`` skips the choice (the user labels 10 a class IN TOTAL): that candidate alone, its epoch chosen
on ``--field-val`` field validation images a class (10 - that many to train on at the goal), or with ``--field-val 0``
on the lab model's validation images (no field label spent on choosing; results/adapt_total10.md, adapt_val0.md).

``--cv [K]`` (default K 5; benchmarks/adapt_cv.py states the rule): 10 labelled field images a class IN TOTAL, the
candidate and its number of epochs chosen by K-fold cross-validation on those 10 alone, then retrained on all 10 with
``training.keep: last`` and evaluated on the field test images (results/adapt_cv.md).

``--cv-ensemble [K]`` (default K 5; benchmarks/adapt_ensemble.py states the rule): the same 10 a class, the shipped
recipe trained once per fold (its epoch kept on the held-out fold), the ensemble of the K fold models (mean of their
temperature-scaled probabilities) evaluated on the field test images (results/adapt_ensemble.md).

The frozen backbone's pass is shared by every fine-tuning run of one process (a feature store; they start from the
same parent), so a run costs its head and block training. Writes each run's field accuracy with its bootstrap
interval, medians over seeds, the share of the drop recovered ((acc_k - acc_0) / drop) and the lab test accuracy
after adaptation, with the machine, to ``adapt.json`` and a table to ``adapt.md``.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from adapt_cv import CANDIDATES as CV_CANDIDATES  # noqa: E402
from machine import describe, machine  # noqa: E402  (benchmarks/ is not a package)

CLASSES = ("healthy", "leaf_spot", "rust", "blight")
IMAGE_SIZE = 128  # small images keep the invocation within ~20 min on 2 shared cores
FIELD_VAL_PER_CLASS = 10  # 5 could not tell the candidates apart (results/adapt_val5.md)
# candidate -> overrides of the classify_adapt recipe, cheapest first (the choice rule prefers the earlier of two
# within one standard error); the default set of a full run, chosen from EXPLORED on one seed's field VALIDATION
# figures (the lab run and images of seed 0, budget 10, 5 validation images a class: results/adapt_explore_seed0.json).
# Each names its epochs, so it means the same whatever the recipe ships (the recipe is head_then_blocks, which
# results/adapt_val5.json calls classify_adapt)
_BLOCKS = {"training.epochs": 10, "training.fine_tune.epochs": 10}
EXPLORED: dict[str, dict[str, Any]] = {
    "head_only": {"training.epochs": 20, "training.fine_tune.epochs": 0},
    "head_augment": {"training.epochs": 20, "training.fine_tune.epochs": 0, "data.augment.enabled": True,
                     "training.feature_cache_views": 4},
    "head_then_blocks": _BLOCKS,
    "warmup": _BLOCKS | {"training.fine_tune.warmup_epochs": 2},
    "low_lr": _BLOCKS | {"training.fine_tune.learning_rate": 2e-4},
    "val_loss": _BLOCKS | {"training.monitor": "val/loss"},
    "augment": _BLOCKS | {"data.augment.enabled": True, "training.feature_cache_views": 4},
    "longer": {"training.epochs": 20, "training.fine_tune.epochs": 20},
    # --field-val 0 (no field label spent on choosing): the epoch is chosen on the LAB validation images' loss (their
    # accuracy is 1.0 from the start). Fixed from the seed-0 exploration before any run of it: the head alone had the
    # lowest field validation NLL at its LAST epoch (0.051; head then blocks 0.188, warmup 0.370) and its curve was
    # flat from epoch 9 on, so where on it the lab images stop matters least
    "head_only_lab_loss": {"training.epochs": 20, "training.fine_tune.epochs": 0, "training.monitor": "val/loss"},
}
DEFAULT = ("head_only", "head_then_blocks", "warmup")
QUICK = ("head_only", "head_then_blocks")
CHOICE_BUDGET = 10  # the candidates are compared on field validation images at this budget (the goal's)
GOAL_LABELLED = 10  # --fixed: the goal's field labels a class, validation images included (issue 29)


def _common(work: Path, name: str, seed: int, quick: bool) -> dict[str, Any]:
    cfg = {"seed": seed, "output_dir": str(work / "runs"), "run_name": name, "device": "cpu",
           "data.image_size": IMAGE_SIZE, "data.num_workers": 0, "data.checks.enabled": False,
           "training.progress_bar": False, "evaluation.bootstrap_samples": 1000, "evaluation.report": False,
           "evaluation.ood.enabled": False, "tracking.backends": []}
    if quick:
        cfg |= {"training.epochs": 2, "training.fine_tune.epochs": 1}
    return cfg


def _manifest(path: Path, rows: list[tuple[Path, str, str]]) -> Path:
    path.write_text("path,label,split\n" + "".join(f"{p},{label},{split}\n" for p, label, split in rows))
    return path


Rows = list[tuple[Path, str, str]]


def _field_rows(field: Path, per_class: int,
                val_per_class: int = FIELD_VAL_PER_CLASS) -> tuple[dict[str, list[Path]], Rows, Rows]:
    """Per class: the labelled pool, the field validation rows and the field test rows (the last half)."""
    pool, val, test = {}, [], []
    for name in CLASSES:
        files = sorted((field / name).glob("*.jpg"))
        half = per_class // 2
        pool[name] = files[:half - val_per_class]  # the test half is the same whatever the validation size
        val += [(p, name, "val") for p in files[half - val_per_class:half]]
        test += [(p, name, "test") for p in files[half:]]
    return pool, val, test


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="default results/adapt.json (--cv: results/adapt_cv.json)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/plantpheno-adapt"))
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 seed, fewer images and epochs")
    parser.add_argument("--replay", type=int, default=10, metavar="N",
                        help="lab training images per class mixed into each fine-tuning set")
    parser.add_argument("--field-val", type=int, default=FIELD_VAL_PER_CLASS, metavar="N",
                        help="field validation images per class (a user labels this many more a class to choose on)")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds (default 0 1 2; quick: 0)")
    parser.add_argument("--budgets", type=int, nargs="+", help="field images per class (default 5 10 20)")
    parser.add_argument("--cv", type=int, nargs="?", const=5, metavar="K",
                        help="10 labelled field images a class in all: choose the candidate and its epochs by K-fold "
                             "cross-validation on them (K default 5), retrain on all 10, evaluate (adapt_cv.py)")
    parser.add_argument("--cv-ensemble", type=int, nargs="?", const=5, metavar="K",
                        help="10 labelled field images a class in all: the ensemble of the K fold models of the shipped "
                             "recipe (K default 5; adapt_ensemble.py)")
    parser.add_argument("--candidates", nargs="+", choices=[*EXPLORED, *CV_CANDIDATES],
                        help=f"default: {' '.join(DEFAULT)} (quick: {' '.join(QUICK)})")
    parser.add_argument("--fixed", choices=list(EXPLORED), metavar="CANDIDATE",
                        help="no choice among candidates: this one at every budget, and the goal is judged at "
                             f"{GOAL_LABELLED} field labels a class IN TOTAL ({GOAL_LABELLED} - --field-val to train "
                             "on; the field validation images only pick its epoch)")
    args = parser.parse_args()
    if args.cv is not None and (args.fixed or args.cv < 2):
        parser.error(f"--cv needs 2 folds or more and no --fixed: got --cv {args.cv}, --fixed {args.fixed}")
    if args.cv_ensemble is not None and (args.fixed or args.cv is not None or args.cv_ensemble < 2):
        parser.error(f"--cv-ensemble needs 2 folds or more, no --cv and no --fixed: got --cv-ensemble "
                     f"{args.cv_ensemble}, --cv {args.cv}, --fixed {args.fixed}")
    if args.cv is not None or args.cv_ensemble is not None:
        args.field_val = 0  # every field label trains or cross-validates; no field validation split
    args.out = args.out or HERE / "results" / ("adapt_cv.json" if args.cv else "adapt_ensemble.json"
                                               if args.cv_ensemble else "adapt.json")

    import shutil

    from plantpheno import api
    from plantpheno.data.synth import synthesize_disease
    from plantpheno.training.feature_store import FeatureStore

    start = time.time()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    lab_n, field_n = (20, 40) if args.quick else (60, 80)
    seeds = tuple(args.seeds or ((0,) if args.quick else (0, 1, 2)))
    goal = GOAL_LABELLED - args.field_val if args.fixed else CHOICE_BUDGET  # train images a class at the goal
    if goal < 1:
        parser.error(f"--fixed needs --field-val below {GOAL_LABELLED}: got {args.field_val}")
    budgets = tuple(args.budgets or ((5, 10) if args.quick else (5, 10, 20)))
    wanted = [args.fixed] if args.fixed else [c for c in args.candidates or (QUICK if args.quick else DEFAULT)
                                              if c in EXPLORED]
    candidates = {name: spec for name, spec in EXPLORED.items() if name in wanted}
    lab = synthesize_disease(args.work / "lab", per_class=lab_n, image_size=IMAGE_SIZE, seed=0)
    field = synthesize_disease(args.work / "field", per_class=field_n, image_size=IMAGE_SIZE, seed=1, style="field")
    pool, field_val, test_rows = _field_rows(field, field_n, args.field_val)
    field_test = _manifest(args.work / "field_test.csv", test_rows)
    field_val_csv = _manifest(args.work / "field_val.csv", field_val) if field_val else None  # its field temperature
    lab_cfg = api.load_config("classify", _common(args.work, "lab", 0, args.quick) | {"data.root": str(lab)})
    lab_run = api.open_run(_train(lab_cfg, None).run_dir)
    zero = api.evaluate(lab_run, data=field_test, name="field", calibrate_on=field_val_csv, verbose=False)
    drop = zero["shift"]["drop"]["accuracy"]
    store = FeatureStore(max_passes=2)  # every fine-tuning run starts from the same parent: one pass for all
    if args.cv_ensemble is not None:
        import adapt_ensemble

        return adapt_ensemble.write(args, lab_run, lab_cfg, pool, test_rows, zero, drop, store, start=start)
    if args.cv is not None:
        return _cross_validated(args, lab_run, lab_cfg, pool, field_test, zero, drop, store, start=start)
    tune = functools.partial(_fine_tune, args, lab_run, pool, field_val, store=store)
    # 1. the choice: each candidate at the goal's budget, judged on the field validation images only
    runs = {name: {str(goal): [tune(goal, seed, name) for seed in seeds]} for name in candidates}
    chosen = args.fixed or choose(runs, list(candidates))
    # 2. the chosen candidate at the other budgets; then every run's field test figures (after the choice)
    runs[chosen] |= {str(k): [tune(k, seed, chosen) for seed in seeds] for k in budgets if k != goal}
    for by_budget in runs.values():
        for rows in by_budget.values():
            for row in rows:
                found = api.evaluate(row.pop("run"), data=field_test, name="field", verbose=False)
                row |= _figures(found) | {"calibration": _ece(found["shift"]["calibration"])}
    summary = _summary(runs, chosen, zero, drop, goal=goal, field_val=args.field_val, fixed=bool(args.fixed))
    record = {"benchmark": "adapt", "machine": machine(), "machine_summary": describe(machine()),
              "quick": args.quick, "seconds": round(time.time() - start, 1),
              "setup": {"lab_per_class": lab_n, "field_per_class": field_n, "field_test_images": len(test_rows),
                        "field_val_images": len(field_val), "image_size": IMAGE_SIZE,
                        "backbone": lab_cfg.model.backbone, "lab_recipe": "classify",
                        "candidates": candidates, "choice_budget": goal, "fixed": args.fixed,
                        "replay_per_class": args.replay, "seeds": list(seeds)},
              "lab_test_accuracy": drop["in_source"], "drop": drop, "lab_model_on_field": _figures(zero),
              "calibration_on_field": _ece(zero["shift"]["calibration"]),
              "separability": zero.get("separability"), "runs": runs, "summary": summary}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2, default=str) + "\n")
    args.out.with_suffix(".md").write_text(_markdown(record))
    for line in summary["lines"]:
        print(line)
    print(f"wrote {args.out} ({record['seconds']} s)")


def _cross_validated(args: argparse.Namespace, lab_run: Any, lab_cfg: Any, pool: dict[str, list[Path]],
                     field_test: Path, zero: dict[str, Any], drop: dict[str, Any], store: Any, *, start: float) -> None:
    """--cv: the rule of benchmarks/adapt_cv.py on every seed; writes the record and its table."""
    import adapt_cv

    from plantpheno.training.feature_store import FeatureStore

    # more passes kept: each fold's re-estimated BatchNorm statistics make passes of their own (pooled features,
    # ~5 KB an image)
    store = FeatureStore(max_passes=8)
    cv = adapt_cv.cross_validate(args, lab_run, pool, field_test, store=store)
    summary = adapt_cv.summary(cv, zero, drop)
    record = {"benchmark": "adapt_cv", "machine": machine(), "machine_summary": describe(machine()),
              "quick": args.quick, "seconds": round(time.time() - start, 1),
              "setup": {"field_pool_per_class": len(next(iter(pool.values()))), "image_size": IMAGE_SIZE,
                        "backbone": lab_cfg.model.backbone, "lab_recipe": "classify", "labelled_per_class":
                        GOAL_LABELLED, "folds": args.cv, "replay_per_class": args.replay},
              "lab_test_accuracy": drop["in_source"], "drop": drop, "lab_model_on_field": _figures(zero),
              "calibration_on_field": _ece(zero["shift"]["calibration"]), "cv": cv, "summary": summary}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2, default=str) + "\n")
    args.out.with_suffix(".md").write_text(adapt_cv.markdown(record))
    print(args.out.with_suffix(".md").read_text())
    print(f"wrote {args.out} ({record['seconds']} s)")


def choose(runs: dict[str, dict[str, list[dict[str, Any]]]], cheapest_first: list[str]) -> str:
    """The choice rule, on field VALIDATION figures only: the lowest mean field validation NLL over seeds (20
    validation images make accuracy move in steps of 0.05; the NLL is finer and still a proper score); then the
    cheapest candidate (``cheapest_first`` order) whose mean NLL is within one standard error of that best (the
    standard error of the best candidate's mean over seeds): a costlier recipe must earn its cost."""
    nll = {n: [r["val_nll"] for r in runs[n][str(CHOICE_BUDGET)]] for n in cheapest_first}
    best = min(cheapest_first, key=lambda n: statistics.fmean(nll[n]))
    se = statistics.stdev(nll[best]) / len(nll[best]) ** 0.5 if len(nll[best]) > 1 else 0.0
    return next(n for n in cheapest_first if statistics.fmean(nll[n]) <= statistics.fmean(nll[best]) + se)


def _train(config: Any, store: Any) -> Any:
    import plantpheno.pipeline as pipeline
    from plantpheno.reporting import LoggingReporter

    return pipeline.train(config, reporter=LoggingReporter(), feature_store=store)


def _fine_tune(args: argparse.Namespace, lab_run: Any, pool: dict[str, list[Path]],
               field_val: list[tuple[Path, str, str]], k: int, seed: int, candidate: str, *,
               store: Any) -> dict[str, Any]:
    """Fine-tune from the lab model on k field images per class (+ the lab replay); its accuracy on the field
    validation images and on the lab test images (what adaptation cost in the lab)."""
    from plantpheno import api

    start = time.time()
    replay, picked, rows = draw(args.replay, lab_run, pool, k, seed)
    lab_test = [row for row in rows if row[2] == "test"]
    val = field_val or [row for row in rows if row[2] == "val"]  # no field val: the lab model's val images
    manifest = _manifest(args.work / f"{candidate}_{k}_{seed}.csv", replay + picked + val + lab_test)
    base = _common(args.work, f"{candidate}_{k}_{seed}", seed, args.quick)
    spec = EXPLORED[candidate]
    if args.quick:  # a smoke run: the candidate's phases, 2 head epochs and at most 1 fine-tune epoch
        spec = spec | {"training.epochs": 2, "training.fine_tune.epochs": min(1, spec["training.fine_tune.epochs"]),
                       "training.fine_tune.warmup_epochs": 0}
    config = api.load_config("classify_adapt", base | spec | {
        "data.manifest": str(manifest), "model.init_from": str(lab_run.path)})
    result = _train(config, store)
    val_eval = api.evaluate(result.run_dir, split="val", verbose=False)
    on_val = _figures(val_eval)
    lab_after = _figures(result.metrics)  # the run's own test split: the lab test images
    return {"seed": seed, "run": result.run_dir, "val_accuracy": on_val["field_accuracy"],
            "val_nll": val_eval["calibration"]["before"]["nll"], "seconds": round(time.time() - start, 1),
            "lab_test_after": lab_after["field_accuracy"], "lab_test_after_low": lab_after["low"],
            "lab_test_after_high": lab_after["high"]}


def draw(replay_per_class: int, lab_run: Any, pool: dict[str, list[Path]], k: int,
         seed: int) -> tuple[Rows, Rows, Rows]:
    """The lab replay rows, the ``k`` labelled field rows a class (the same images for every candidate and
    protocol of a seed and budget) and the lab model's split rows."""
    import numpy as np

    rng = np.random.default_rng([seed, k])
    rows = [(Path(r["path"]), r["label"], r["split"]) for r in _read_csv(lab_run.path / "split.csv")]
    replay = []
    for name in CLASSES:
        train = [row for row in rows if row[1] == name and row[2] == "train"]
        replay += [train[i] for i in sorted(rng.choice(len(train), min(replay_per_class, len(train)),
                                                       replace=False))]
    picked = [(p, name, "train") for name in CLASSES for p in rng.choice(pool[name], k, replace=False)]
    return replay, picked, rows


def _read_csv(path: Path) -> list[dict[str, str]]:
    import csv

    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _figures(metrics: dict[str, Any]) -> dict[str, Any]:
    ci = metrics.get("confidence_interval") or {}
    return {"field_accuracy": metrics["accuracy"], "low": ci.get("low"), "high": ci.get("high"),
            "macro_f1": metrics["macro_f1"], "images": metrics["num_images"]}


def _ece(block: dict[str, Any]) -> dict[str, Any]:
    """ECE on the field test images: raw, after the run's temperature (an adapted run fits it on its field
    validation images), and after a temperature fitted on the field validation images (the lab model)."""
    def cut(b: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if b is None else {k: b.get(k) for k in ("estimate", "low", "high")}

    own = block.get("source_temperature")
    return {"ece_before": cut(block["ece_before"]), "run_temperature": block["temperature"],
            "run_temperature_applied": block["temperature_applied"], "ece_after_run_temperature":
            cut(block.get("ece_after")), "ece_change_run_temperature": cut(block.get("ece_change")),
            "field_temperature": None if own is None else {
                k: own.get(k) for k in ("fitted_on", "num_images", "temperature", "applied", "not_applied",
                                        "nll_before", "nll_after")} | {
                "ece_after": cut(own["ece_after"]), "ece_change": cut(own["ece_change"])}}


def _summary(runs: dict[str, dict[str, list[dict[str, Any]]]], chosen: str, zero: dict[str, Any],
             drop: dict[str, Any], *, goal: int, field_val: int, fixed: bool) -> dict[str, Any]:
    """Per candidate: its mean field validation accuracy (the choice), medians over seeds, shares recovered."""
    base = zero["accuracy"]
    lines = [f"lab test accuracy {drop['in_source']:.3f}; on field {base:.3f}: drop {drop['drop']:.3f} "
             f"(95 % CI {drop['low']:.3f} to {drop['high']:.3f})"]
    out: dict[str, Any] = {"chosen": chosen, "choice_budget": goal, "fixed": fixed, "field_val": field_val,
                           "candidates": {}}
    for name, by_budget in runs.items():
        row: dict[str, Any] = {"mean_field_val_accuracy": statistics.fmean(
            r["val_accuracy"] for r in by_budget[str(goal)]), "mean_field_val_nll": statistics.fmean(
            r["val_nll"] for r in by_budget[str(goal)]), "median_field_accuracy": {},
            "recovered_share": {}, "median_lab_test_after": {}}
        for k, rows in sorted(by_budget.items(), key=lambda item: int(item[0])):
            median = statistics.median(r["field_accuracy"] for r in rows)
            row["median_field_accuracy"][k] = median
            row["recovered_share"][k] = (median - base) / drop["drop"] if drop["drop"] > 0 else None
            row["median_lab_test_after"][k] = statistics.median(r["lab_test_after"] for r in rows)
        out["candidates"][name] = row
        how = " (fixed up front)" if fixed else " (chosen on field val)"
        lines.append(f"{name}{how if name == chosen else ''}: field val at {goal}/class "
                     f"{row['mean_field_val_accuracy']:.3f}, NLL {row['mean_field_val_nll']:.3f}")
        for k, median in row["median_field_accuracy"].items():
            share = row["recovered_share"][k]
            each = ", ".join(f"{r['field_accuracy']:.3f} [{r['low']:.3f}, {r['high']:.3f}]" for r in by_budget[k])
            lines.append(f"  {k:>2}/class: field test median {median:.3f}"
                         + (f", recovers {share:.0%} of the drop" if share is not None else "")
                         + f", lab test after {row['median_lab_test_after'][k]:.3f}  (each seed: {each})")
    share = out["candidates"][chosen]["recovered_share"].get(str(goal))
    out["goal_10_per_class_recovers_half"] = share is not None and share >= 0.5
    out["lines"] = lines
    return out


def _markdown(record: dict[str, Any]) -> str:
    s, d, zero = record["summary"], record["drop"], record["lab_model_on_field"]
    out = ["# Adapting to another source: lab -> field on synthetic leaves (benchmarks/adapt.py)", "",
           f"Machine: {record['machine_summary']}; {record['seconds']} s; quick={record['quick']}.", "",
           f"Lab model (classify recipe, {record['setup']['backbone']}, {record['setup']['image_size']} px): lab test "
           f"{d['in_source']:.3f}, field test {zero['field_accuracy']:.3f} [{zero['low']:.3f}, {zero['high']:.3f}]: "
           f"drop {d['drop']:.3f} (95 % CI {d['low']:.3f} to {d['high']:.3f}).", "",
           _choice_line(s, record["setup"]["field_val_images"] // len(CLASSES)), "",
           "| candidate | field val (mean) | labelled field / class | field test, each seed [95 % CI] | median | "
           "share of the drop recovered | lab test after (median) |", "|---|---|---|---|---|---|---|"]
    for name, row in s["candidates"].items():
        val = (f"{'lab val: ' if s.get('field_val') == 0 else ''}{row['mean_field_val_accuracy']:.3f}, "
               f"NLL {row['mean_field_val_nll']:.3f} at {s['choice_budget']}/class")
        label = f"**{name}** ({'fixed' if s.get('fixed') else 'chosen'})" if name == s["chosen"] else name
        for k, median in row["median_field_accuracy"].items():
            each = ", ".join(f"{r['field_accuracy']:.3f} [{r['low']:.3f}, {r['high']:.3f}]"
                             for r in record["runs"][name][k])
            share = row["recovered_share"][k]
            out.append(f"| {label} | {val} | {k} | {each} | {median:.3f} | "
                       f"{'-' if share is None else f'{share:.0%}'} | {row['median_lab_test_after'][k]:.3f} |")
    out += ["", *_calibration_markdown(record)]
    goal = "met" if s["goal_10_per_class_recovers_half"] else "NOT met"
    labelled = (f"{GOAL_LABELLED} labelled field images per class IN TOTAL ({s['choice_budget']} train + "
                f"{s['field_val']} val)" if s.get("fixed") else "10 labelled field images per class")
    out += ["", f"Goal ({labelled} recover at least half of the drop, chosen candidate): {goal}.", ""]
    return "\n".join(out)


def _choice_line(summary: dict[str, Any], field_val: int) -> str:
    if summary.get("fixed"):
        picks = (f"its {field_val} field validation images a class pick only its epoch" if field_val else
                 "no field validation image: its epoch is chosen on the lab model's validation images (its temperature "
                 "too)")
        return f"No choice: {summary['chosen']} fixed before the run; {picks}."
    return ("Choice (field validation images only): the lowest mean field validation NLL at "
            f"{summary['choice_budget']}/class, then the cheapest candidate (listed first) within one standard error "
            "of it.")



def _calibration_markdown(record: dict[str, Any]) -> list[str]:
    """ECE on the field test images: the lab model's before and after temperatures, then each adapted run's."""
    def ci(b: dict[str, Any] | None) -> str:
        if b is None:
            return "-"
        return f"{b['estimate']:.3f}" + (f" [{b['low']:.3f}, {b['high']:.3f}]" if b.get("low") is not None else "")

    cal = record["calibration_on_field"]
    field = cal["field_temperature"]
    run_t = (f"after its own temperature (T = {cal['run_temperature']:.3g}, fitted on lab val) "
             f"{ci(cal['ece_after_run_temperature'])}" if cal["run_temperature_applied"] else
             "its own temperature is not applied (the lab validation split is perfectly separated)")
    lab_field = ("no field validation images to fit a field temperature on" if field is None else
                 f"after a temperature fitted on the {field['num_images']} labelled field VALIDATION images "
                 f"(T = {field['temperature']:.3g}): {ci(field['ece_after'])}, change {ci(field['ece_change'])} "
                 f"(the interval refits the temperature on each resample of those images)" if field["applied"]
                 else f"no field temperature: {field['not_applied']}")
    out = [f"Calibration on the field TEST images (95 % bootstrap intervals, {record['setup']['field_test_images']} "
           f"images): the lab model's ECE raw {ci(cal['ece_before'])}; {run_t}; {lab_field}.", "",
           "| candidate | labelled field / class | ECE raw, each seed | ECE after the run's temperature (fitted on "
           "its field val images), each seed |", "|---|---|---|---|"]
    for name, by_budget in record["runs"].items():
        for k, rows in sorted(by_budget.items(), key=lambda item: int(item[0])):
            raw = ", ".join(ci(r["calibration"]["ece_before"]) for r in rows)
            after = ", ".join(ci(r["calibration"]["ece_after_run_temperature"]) + (
                f" (T = {r['calibration']['run_temperature']:.3g})" if r["calibration"]["run_temperature_applied"]
                else " (not applied: val separated)") for r in rows)
            out.append(f"| {name} | {k} | {raw} | {after} |")
    return out


if __name__ == "__main__":
    main()
