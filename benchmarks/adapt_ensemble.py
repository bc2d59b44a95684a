"""``benchmarks/adapt.py --cv-ensemble K``: 10 labelled field images a class IN TOTAL, adapted as the ENSEMBLE of the
K cross-validation fold models (issue 29's goal at 10 labels a class; results/adapt_ensemble.md reports it).

THE RULE (written down and committed before any run of it; nothing in it is chosen among candidates or tuned on a
field test image; the earlier protocols' test figures were known when it was fixed, so it is fixed in advance):

1. Each seed draws its own 10 labelled field images a class and its lab replay: the images ``adapt.py --cv`` draws
   for that seed (``adapt.draw`` at budget 10). The 10 a class are cut into K stratified folds with
   ``adapt_cv.folds`` (each class's images shuffled with the seed, dealt round-robin): 10/K a class a fold.
2. For each of the K folds, the lab model is fine-tuned (``model.init_from``) with the shipped ``classify_adapt``
   recipe AS IT IS (head then its last 2 blocks, its own schedule and length, ``training.keep: best`` on its own
   monitor) on the other K-1 folds (+ the lab replay); the held-out fold is the run's validation split: it places
   the kept epoch and fits the run's temperature (K = 5: 8 a class to train, 2 a class to validate). So every
   labelled image trains K-1 fold models and validates exactly one; exactly 10 labels a class are used.
3. The adapted model is the ensemble of the K fold models: the MEAN of their temperature-scaled class probabilities
   (:func:`mean_probabilities`; each model's own temperature, as its ``predict`` applies it). Its prediction is the
   class of highest mean probability.
4. The ensemble is evaluated on the field TEST images (accuracy with a percentile-bootstrap 95 % interval, and the
   ECE of the mean probabilities with its interval), the only time they are read, then on the lab test images.
   Each fold model's own field test accuracy is reported too, for the record: it chooses nothing.
5. The verdict: the median over 3 seeds of the ensemble's field test accuracy against the lab model's field test
   accuracy plus half its drop (MET or NOT met, by how much).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

Row = tuple[Path, str, str]
BOOTSTRAP = 1000


def mean_probabilities(per_model: list[np.ndarray]) -> np.ndarray:
    """The ensemble's class probabilities: the mean of the models' (already temperature-scaled) probabilities,
    each ``(images, classes)`` with rows summing to 1."""
    if not per_model:
        raise ValueError("no model's probabilities to average")
    stacked = np.stack([np.asarray(p, dtype=np.float64) for p in per_model])  # fails on differing shapes
    if stacked.ndim != 3 or not np.allclose(stacked.sum(axis=2), 1.0, atol=1e-4) or (stacked < 0).any():
        raise ValueError(f"expected (images, classes) probability arrays with rows summing to 1; got shape "
                         f"{stacked.shape[1:]}")
    return stacked.mean(axis=0)


def figures(probs: np.ndarray, labels: np.ndarray, *, seed: int = 0) -> dict[str, Any]:
    """Accuracy and top-label ECE of ``probs`` on ``labels``, each with a percentile-bootstrap 95 % interval."""
    from plantpheno.evaluation.calibration import reliability
    from plantpheno.evaluation.metrics import bootstrap_ci

    def accuracy(y: np.ndarray, p: np.ndarray) -> float:
        return float((p.argmax(axis=1) == y).mean())

    def ece(y: np.ndarray, p: np.ndarray) -> float:
        return reliability(p, y)["ece"]

    acc = bootstrap_ci(accuracy, labels, probs, n_resamples=BOOTSTRAP, seed=seed)
    cal = bootstrap_ci(ece, labels, probs, n_resamples=BOOTSTRAP, seed=seed)
    return {"accuracy": acc["estimate"], "low": acc["low"], "high": acc["high"], "images": int(len(labels)),
            "ece": {k: cal[k] for k in ("estimate", "low", "high")}}


def _probabilities(run_dir: Path, rows: list[Row], classes: list[str]) -> tuple[np.ndarray, float]:
    """A fold model's temperature-scaled probabilities on ``rows`` (columns in ``classes`` order) and its
    temperature."""
    from plantpheno import api

    with api.load_model(run_dir, device="cpu") as model:
        if sorted(model.class_names or []) != sorted(classes):  # columns are taken by name, in ``classes`` order
            raise ValueError(f"{run_dir}: classes {model.class_names}, expected {classes}")
        found = model.predict([str(p) for p, _, _ in rows], batch_size=64)
        temperature = float(model.metadata.applied_temperature)
    return np.array([[p.probabilities[c] for c in classes] for p in found]), temperature


def ensemble(args: Any, lab_run: Any, pool: dict[str, list[Path]], field_test: list[Row], *,
             store: Any) -> dict[str, Any]:
    """Steps 1-4 for every seed: the fold models' and the ensemble's field test and lab test figures."""
    import adapt
    import adapt_cv

    classes = list(adapt.CLASSES)
    k = args.cv_ensemble
    field_y = np.array([classes.index(label) for _, label, _ in field_test])
    out = []
    for seed in args.seeds or ((0,) if args.quick else (0, 1, 2)):
        start = time.time()
        replay, picked, rows = adapt.draw(args.replay, lab_run, pool, adapt.GOAL_LABELLED, seed)
        lab_test = [row for row in rows if row[2] == "test"]
        lab_y = np.array([classes.index(label) for _, label, _ in lab_test])
        cut = adapt_cv.folds(picked, k, seed)
        field_p, lab_p, folds_out = [], [], []
        for f, held in enumerate(cut):
            train = [row for g, fold in enumerate(cut) if g != f for row in fold]
            run = adapt_cv._train(args, lab_run, f"ens_s{seed}_f{f}", seed, {},
                                  replay + train + [(p, label, "val") for p, label, _ in held] + lab_test,
                                  store=store)
            on_field, temperature = _probabilities(run.run_dir, field_test, classes)
            on_lab, _ = _probabilities(run.run_dir, lab_test, classes)
            field_p.append(on_field)
            lab_p.append(on_lab)
            folds_out.append({"fold": f, "run": str(run.run_dir), "temperature": temperature,
                              "val_images": [str(p) for p, _, _ in held],
                              "field": figures(on_field, field_y, seed=seed),
                              "lab_test_accuracy": float((on_lab.argmax(axis=1) == lab_y).mean())})
        field = figures(mean_probabilities(field_p), field_y, seed=seed)
        lab = figures(mean_probabilities(lab_p), lab_y, seed=seed)
        out.append({"seed": seed, "folds": k, "fold_models": folds_out, "field": field, "lab_test_after": lab,
                    "labelled": [str(p) for p, _, _ in picked], "seconds": round(time.time() - start, 1)})
        print(f"seed {seed}: ensemble of {k} on field test {field['accuracy']:.3f} "
              f"[{field['low']:.3f}, {field['high']:.3f}]; folds "
              + ", ".join(f"{m['field']['accuracy']:.3f}" for m in folds_out), flush=True)
    return {"folds": k, "recipe": "classify_adapt as shipped (training.keep: best on the held-out fold)",
            "seeds": out}


def summary(result: dict[str, Any], zero: dict[str, Any], drop: dict[str, Any]) -> dict[str, Any]:
    """Step 5: the median over seeds of the ensemble's field test accuracy, the share of the drop it recovers and
    the verdict."""
    seeds = result["seeds"]
    median = statistics.median(s["field"]["accuracy"] for s in seeds)
    needed = zero["accuracy"] + drop["drop"] / 2
    share = (median - zero["accuracy"]) / drop["drop"] if drop["drop"] > 0 else None
    return {"median_field_accuracy": median, "recovered_share": share, "needed_for_half": needed,
            "margin": median - needed, "median_lab_test_after": statistics.median(
                s["lab_test_after"]["accuracy"] for s in seeds),
            "goal_10_per_class_recovers_half": share is not None and share >= 0.5, "seeds": len(seeds)}


def markdown(record: dict[str, Any]) -> str:
    """results/adapt_ensemble.md: the command, the machine, the drop, each seed's fold models and ensemble, the
    verdict."""
    d, zero, s, ens = record["drop"], record["lab_model_on_field"], record["summary"], record["ensemble"]

    def ci(b: dict[str, Any]) -> str:
        return f"{b['estimate']:.3f} [{b['low']:.3f}, {b['high']:.3f}]"

    out = ["# Adapting with 10 labelled field images a class IN TOTAL: the ensemble of the cross-validation fold "
           "models (benchmarks/adapt.py --cv-ensemble)", "", f"Command: `{record['command']}`", "",
           f"Machine: {record['machine_summary']}; {record['seconds']} s; quick={record['quick']}.", "",
           f"Lab model (classify recipe, {record['setup']['backbone']}, {record['setup']['image_size']} px): lab test "
           f"{d['in_source']:.3f}, field test {zero['field_accuracy']:.3f} [{zero['low']:.3f}, {zero['high']:.3f}]: "
           f"drop {d['drop']:.3f} (95 % CI {d['low']:.3f} to {d['high']:.3f}); half the drop back needs a field test "
           f"median of {s['needed_for_half']:.3f}.", "",
           f"Protocol (the rule in benchmarks/adapt_ensemble.py, fixed before the run): {ens['folds']} stratified folds "
           "of the 10 a class; per fold the classify_adapt recipe as shipped (head then 2 blocks, training.keep: best "
           "on the held-out fold, which also fits the temperature); the adapted model is the mean of the fold models' "
           "temperature-scaled probabilities. 95 % percentile-bootstrap intervals (1000 resamples).", "",
           "| seed | fold models' field test accuracy (for the record) | their temperatures | ensemble field test "
           "[95 % CI] | ensemble ECE on field [95 % CI] | ensemble lab test after |", "|---|---|---|---|---|---|"]
    for row in ens["seeds"]:
        each = ", ".join(f"{m['field']['accuracy']:.3f}" for m in row["fold_models"])
        temps = ", ".join(f"{m['temperature']:.3g}" for m in row["fold_models"])
        f = row["field"]
        out.append(f"| {row['seed']} | {each} | {temps} | {f['accuracy']:.3f} [{f['low']:.3f}, {f['high']:.3f}] | "
                   f"{ci(f['ece'])} | {row['lab_test_after']['accuracy']:.3f} |")
    share = s["recovered_share"]
    verdict = "MET" if s["goal_10_per_class_recovers_half"] else "NOT met"
    out += ["", f"Median over {s['seeds']} seed(s) of the ensemble's field test accuracy {s['median_field_accuracy']:.3f}"
            f" (lab test after {s['median_lab_test_after']:.3f}): {'-' if share is None else f'{share:.0%}'} of the "
            "drop recovered.", "",
            f"Goal (10 labelled field images a class IN TOTAL recover at least half of the drop): {verdict} (median "
            f"{s['median_field_accuracy']:.3f} against {s['needed_for_half']:.3f} needed: "
            f"{s['margin']:+.3f}).", ""]
    return "\n".join(out)


def write(args: Any, lab_run: Any, lab_cfg: Any, pool: dict[str, list[Path]], field_test: list[Row],
          zero: dict[str, Any], drop: dict[str, Any], store: Any, *, start: float) -> None:
    """--cv-ensemble: the rule on every seed; writes the record (``args.out``) and its table (``.md``)."""
    import json
    import sys

    import adapt
    from machine import describe, machine

    started = machine()  # the load when the fold runs start
    result = ensemble(args, lab_run, pool, field_test, store=store)
    record = {"benchmark": "adapt_ensemble", "command": " ".join(["python benchmarks/adapt.py", *sys.argv[1:]]),
              "machine": started, "machine_summary": describe(started), "quick": args.quick,
              "seconds": round(time.time() - start, 1),
              "setup": {"field_pool_per_class": len(next(iter(pool.values()))), "field_test_images": len(field_test),
                        "image_size": adapt.IMAGE_SIZE, "backbone": lab_cfg.model.backbone, "lab_recipe": "classify",
                        "labelled_per_class": adapt.GOAL_LABELLED, "folds": args.cv_ensemble,
                        "replay_per_class": args.replay},
              "lab_test_accuracy": drop["in_source"], "drop": drop, "lab_model_on_field": adapt._figures(zero),
              "ensemble": result, "summary": summary(result, zero, drop)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2, default=str) + "\n")
    args.out.with_suffix(".md").write_text(markdown(record))
    print(args.out.with_suffix(".md").read_text())
    print(f"wrote {args.out} ({record['seconds']} s)")
