"""Budget mode against the shipped recipes, in one invocation on one machine (recorded): test figures with their
intervals, and each budget run's wall time against its budget (issue 33).

    python benchmarks/budget.py                 # PlantVillage subset + synthetic rosettes, budgets 5, 10, 20 min
    python benchmarks/budget.py --quick         # small subsets, a 2 min budget on each (about 6 min)
    python benchmarks/budget.py --datasets plantvillage --budgets 10m   # writes budget_plantvillage.*

Per dataset: the shipped recipe (``classify`` for PlantVillage, ``traits`` for the rosettes) trained once with
``pipeline.train``, then ``train_in_budget`` at each budget, all with seed 0 on the same split. Each budget run
chooses on validation data only (its leaderboard is recorded); its test figure is the final run's only test
evaluation. Judged per budget: "not worse" when its test figure is not worse than the recipe's beyond the recipe's
95 % bootstrap interval (accuracy >= the interval's low end; MAE <= its high end), and "in time" when its wall time is
at most 1.10 x the budget. Writes benchmarks/results/budget.{json,md} (``--quick``: budget_quick.*) with the machine
and the load average during each arm, after every arm (an interrupted invocation keeps the arms that finished).

The full run takes about 35 min of budgets plus the two recipe runs and the data preparation on a 2-core CPU.
``--quick`` is a smoke test of the same code path: on its subsets the validation split is small, so every
candidate is scored by 2-fold cross-validation (``budget.folds=2`` there; 5 in the full run).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PLANTVILLAGE = REPO.parent / "shared" / "data" / "plantvillage-subset" / "splits.csv"
OUT = HERE / "results"
sys.path.insert(0, str(HERE))
from machine import describe, machine  # benchmarks/ is not a package

OVERRUN = 1.10
FULL = {"plantvillage": ["5m", "10m", "20m"], "traits": ["5m", "10m", "20m"]}
QUICK = {"plantvillage": ["2m"], "traits": ["2m"]}


class LoadSampler:
    """The 1-minute load average every ``every`` seconds in a background thread: each arm records the load it ran
    under (a busy machine makes every figure slower, and budget mode must keep its budget there too)."""

    def __init__(self, every: float = 15.0) -> None:
        self.every, self.samples, self._stop = every, [], threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(self.every)

    def since(self, mark: int) -> dict[str, float] | None:
        """min/mean/max of the samples taken since ``mark`` (``len(self.samples)`` when the arm started)."""
        taken = self.samples[mark:] or self.samples[-1:]
        return ({"min": round(min(taken), 2), "mean": round(statistics.fmean(taken), 2),
                 "max": round(max(taken), 2), "samples": len(taken)} if taken else None)


LOAD = LoadSampler()


def plantvillage_manifest(folder: Path, *, per_class: dict[str, int] | None) -> Path:
    """splits.csv with absolute paths; ``per_class`` keeps the first N images of each class in each split."""
    rows = list(csv.DictReader(PLANTVILLAGE.open()))
    kept, seen = [], {}
    for r in sorted(rows, key=lambda r: r["path"]):
        key = (r["label"], r["split"])
        seen[key] = seen.get(key, 0) + 1
        if per_class is None or seen[key] <= per_class[r["split"]]:
            kept.append({**r, "path": str((PLANTVILLAGE.parent / r["path"]).resolve())})
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "labels.csv"
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "label", "split"])
        writer.writeheader()
        writer.writerows(kept)
    return out


def rosette_manifest(folder: Path, *, plants: int) -> Path:
    from plantpheno.data.synth import synthesize_rosettes

    return synthesize_rosettes(folder, plants=plants, views_per_plant=3, image_size=128, seed=0)


def _config(recipe: str, manifest: Path, out: Path, name: str, extra: list[str]) -> Any:
    from plantpheno.config import load_config

    return load_config(recipe, [f"data.manifest={manifest}", "data.root=null", f"output_dir={out}",
                                f"run_name={name}", "seed=0", "training.progress_bar=false",
                                "tracking.backends=[]", "tracking.system_metrics_interval=0", *extra])


def _figures(metrics: dict[str, Any]) -> dict[str, Any]:
    key = metrics["headline_metric"]
    ci = metrics.get("confidence_interval") or {}
    return {"metric": key, "test": metrics[key], "ci": [ci.get("low"), ci.get("high")],
            "num_test_images": metrics.get("num_images")}


def recipe_run(recipe: str, manifest: Path, out: Path) -> dict[str, Any]:
    from plantpheno.pipeline import train
    from plantpheno.reporting import RecordingReporter

    start, mark = time.perf_counter(), len(LOAD.samples)
    result = train(_config(recipe, manifest, out, f"recipe-{recipe}", []), reporter=RecordingReporter())
    return {"wall_s": round(time.perf_counter() - start, 1), "load": LOAD.since(mark), **_figures(result.metrics)}


def budget_run(recipe: str, manifest: Path, out: Path, budget: str, folds: int) -> dict[str, Any]:
    from plantpheno.budget import train_in_budget
    from plantpheno.config import parse_duration
    from plantpheno.errors import PlantPhenoError
    from plantpheno.reporting import RecordingReporter

    reporter = RecordingReporter()
    config = _config(recipe, manifest, out, f"budget-{budget}", [f"budget.time={budget}", f"budget.folds={folds}"])
    from plantpheno.run.folder import RunDir

    start, mark = time.perf_counter(), len(LOAD.samples)
    try:
        result = train_in_budget(config, reporter=reporter)
    except PlantPhenoError as exc:  # a budget too small for this machine and data is a result too
        return {"budget_s": parse_duration(budget), "error": str(exc), "wall_s": round(time.perf_counter() - start, 1),
                "load": LOAD.since(mark)}
    wall = time.perf_counter() - start
    metrics = result.run.metrics
    board = json.loads(RunDir(result.run.run_dir).budget_leaderboard.read_text())
    return {"budget_s": result.budget_s, "wall_s": round(wall, 1), "wall_over_budget": round(wall / result.budget_s, 3),
            "load": LOAD.since(mark), "chosen": result.chosen.name, **_figures(metrics),
            "final_run_s": board.get("final_run_s"), "final_epochs": board.get("final_epochs"),
            "final_planned_epochs": board.get("final_planned_epochs"), "final_cut": board.get("final_cut"),
            "candidates": [{"name": r.name, "status": r.status, "val": r.score, "se": r.se, "seconds": r.seconds,
                            "estimate_s": r.estimate_s, "note": r.note} for r in result.rows],
            "progress": [m for level, m in reporter.lines if m.startswith("budget")]}


def judge(recipe: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    if "error" in run:
        return {"not_worse": None, "in_time": None}
    low, high = recipe["ci"]
    if run["metric"] == "accuracy":
        not_worse = low is None or run["test"] >= low - 1e-12
    else:
        not_worse = high is None or run["test"] <= high + 1e-12
    return {"not_worse": not_worse, "in_time": run["wall_s"] <= OVERRUN * run["budget_s"]}


def markdown(doc: dict[str, Any]) -> str:
    lines = [f"# Budget mode against the shipped recipes{' (--quick)' if doc['quick'] else ''}", "",
             f"Machine: {describe(doc['machine'])}", "", f"Command: `{doc['command']}`", "",
             "Test figures with 95 % bootstrap intervals, seed 0. 'not worse': the budget run's test figure is not "
             "worse than the recipe's beyond the recipe's interval; 'in time': wall time <= 1.10 x the budget. "
             "'load': the 1-minute load average during the arm, sampled every 15 s: mean (min-max). Results are "
             "written after every arm: an interrupted invocation keeps the arms that finished.", ""]
    for name, part in doc["datasets"].items():
        lines += [f"## {name}: {part['data']}", "",
                  "| method | chosen | test | 95 % interval | wall s | wall / budget | not worse | in time | load |",
                  "|---|---|---|---|---|---|---|---|---|"]
        r = part["recipe"]
        lines.append(f"| recipe {part['recipe_name']} | - | {r['metric']} {r['test']:.4f} | "
                     f"{_ci(r['ci'])} | {r['wall_s']:.0f} | - | - | - | {_load(r.get('load'))} |")
        for budget, b in part["budgets"].items():
            if "error" in b:
                lines.append(f"| budget {budget} | refused: {b['error']} | | | {b['wall_s']:.0f} | | | | "
                             f"{_load(b.get('load'))} |")
                continue
            j = b["judged"]
            lines.append(f"| budget {budget} | {b['chosen']} | {b['metric']} {b['test']:.4f} | {_ci(b['ci'])} | "
                         f"{b['wall_s']:.0f} | {b['wall_over_budget']:.2f} | {_yes(j['not_worse'])} | "
                         f"{_yes(j['in_time'])} | {_load(b.get('load'))} |")
        lines.append("")
        for budget, b in part["budgets"].items():
            if "candidates" not in b:
                continue
            final = (f"; final run {b['final_run_s']} s, {b['final_epochs']} of {b['final_planned_epochs']} epochs"
                     + (" (stopped at the budget's deadline)" if b.get("final_cut") else ""))
            lines += [f"Budget {budget} candidates{final}:", "", "| candidate | status | val | SE | s | estimate s |",
                      "|---|---|---|---|---|---|"]
            lines += [f"| {c['name']} | {c['status']} | {_num(c['val'])} | {_num(c['se'])} | {_num(c['seconds'], 0)} "
                      f"| {_num(c['estimate_s'], 0)} |" for c in b["candidates"] if c["status"] != "not tried"]
            lines.append("")
    return "\n".join(lines) + "\n"


def _ci(ci: list[float | None]) -> str:
    return "-" if ci[0] is None else f"{ci[0]:.4f}-{ci[1]:.4f}"


def _load(load: dict[str, float] | None) -> str:
    return "-" if not load else f"{load['mean']:.1f} ({load['min']:.1f}-{load['max']:.1f})"


def _num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _yes(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "**no**")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small subsets, a 2 min budget each, 2 folds")
    parser.add_argument("--datasets", nargs="*", default=["plantvillage", "traits"], choices=["plantvillage", "traits"])
    parser.add_argument("--budgets", nargs="*", default=None, help="durations such as 5m (default: by mode)")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    folds = 2 if args.quick else 5
    doc: dict[str, Any] = {"quick": args.quick, "machine": machine(), "command": " ".join(["python", *sys.argv]),
                           "started": time.strftime("%Y-%m-%d %H:%M"), "datasets": {}}
    stem = ("budget_quick" if args.quick else "budget") + (
        "" if sorted(args.datasets) == ["plantvillage", "traits"] else "_" + "_".join(args.datasets))

    def save() -> None:
        OUT.mkdir(exist_ok=True)
        (OUT / f"{stem}.json").write_text(json.dumps(doc, indent=2) + "\n")
        (OUT / f"{stem}.md").write_text(markdown(doc))

    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets:
            if name == "plantvillage":
                if not PLANTVILLAGE.is_file():
                    print(f"skipping plantvillage: {PLANTVILLAGE} is missing", flush=True)
                    continue
                per = {"train": 8, "val": 4, "test": 4} if args.quick else None
                manifest = plantvillage_manifest(Path(tmp) / "pv", per_class=per)
                recipe, data = "classify", ("PlantVillage subset, 15 classes" + (
                    f", {per['train']}/{per['val']}/{per['test']} images a class (train/val/test)" if per
                    else ", splits.csv (1,570/337/343)"))
            else:
                plants = 20 if args.quick else 80
                manifest = rosette_manifest(Path(tmp) / "rosettes", plants=plants)
                recipe, data = "traits", f"synthetic rosettes, {plants} plants x 3 views, 128 px, split by plant"
            part: dict[str, Any] = {"data": data, "recipe_name": recipe, "budgets": {}}
            doc["datasets"][name] = part
            part["recipe"] = recipe_run(recipe, manifest, Path(tmp) / "runs" / name)
            print(name, "recipe", json.dumps(part["recipe"]), flush=True)
            save()
            for budget in args.budgets or plan[name]:
                run = budget_run(recipe, manifest, Path(tmp) / "runs" / name, budget, folds)
                run["judged"] = judge(part["recipe"], run)
                part["budgets"][budget] = run
                print(name, budget, json.dumps({k: v for k, v in run.items() if k not in ("progress", "candidates")}),
                      flush=True)
                save()
    doc["finished"] = time.strftime("%Y-%m-%d %H:%M")
    save()
    print(markdown(doc))


if __name__ == "__main__":
    main()
