"""Run the CPU benchmarks of issue 6 and write one summary table against their targets.

    python benchmarks/run_all.py                 # all three (about 20-30 minutes on 2 cores)
    python benchmarks/run_all.py --only trainer  # some of them: trainer, pipeline, accuracy
    python benchmarks/run_all.py --summary-only  # rebuild the summary from benchmarks/results/*.json

Each benchmark runs in its own process (as documented in its file) and writes its own
benchmarks/results/<name>.{json,md}; this script then reads those and writes
benchmarks/results/summary.{json,md}: per target, the measured figure, the setting and whether it is met.
``make bench`` runs it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))
from machine import describe, machine  # noqa: E402  benchmarks/ is not a package; records the machine
BENCHMARKS = {  # name -> (script and arguments, the JSON it writes)
    "trainer": (["trainer_overhead.py"], "trainer_overhead.json"),
    "pipeline": (["data_pipeline.py"], "data_pipeline.json"),
    "accuracy": (["time_to_accuracy.py"], "time_to_accuracy.json"),
}


def _load(name: str) -> dict | None:
    path = RESULTS / BENCHMARKS[name][1]
    return json.loads(path.read_text()) if path.is_file() else None


def _machine_of(result: dict) -> str:
    """The machine a result file records: machine.py's record, an older file's one-line string, or none."""
    meta = result.get("meta", {})
    recorded = result.get("machine") or meta.get("machine_record") or meta.get("machine")
    if isinstance(recorded, dict):  # the short form; the result's own Markdown has describe()'s whole line
        return f"{recorded['cpu_model']}, {recorded.get('cpus_affinity') or recorded.get('cpus_online')} cores"
    return recorded or "machine not recorded"


def summarise() -> list[dict]:
    """One row per target, from whatever result files exist, each with the machine its file records."""
    rows = []
    trainer = _load("trainer")
    if trainer:
        a = trainer["args"]
        fastest = trainer.get("fastest")  # since 2026-12-01: the fastest repeat of each loop as well
        paired = trainer.get("paired_ratios") or []
        also = (f" (fastest runs: {fastest['plantpheno Trainer'] / fastest['minimal loop']:.3f}x; back-to-back pairs "
                f"{min(paired):.2f}-{max(paired):.2f}x: the machine's noise)" if fastest and paired else "")
        rows.append({"target": "trainer step time vs a minimal loop <= 1.02x",
                     "measured": f"{trainer['ratio']:.3f}x{also}", "met": trainer["ratio"] <= 1.02,
                     "setting": f"{a['backbone']}, {a['image_size']} px, batch {a['batch_size']}, {a['steps']} steps, "
                                f"median of {a['repeats']}; {_machine_of(trainer)}"})
    pipelines = [json.loads(path.read_text()) for path in sorted(RESULTS.glob("data_pipeline*.json"))
                 if not path.stem.endswith("_unrecorded_machine")]  # kept for the record, superseded
    for pipeline in pipelines:  # data_pipeline.json, and runs on enlarged copies (--enlarge PX)
        base = {r["image_size"]: r["later_img_s"] for r in pipeline["results"] if r["pipeline"] == "imagefolder"}
        for r in pipeline["results"]:
            if r["pipeline"] in ("memory", "disk-reused") and r["image_size"] in base:
                ratio = r["later_img_s"] / base[r["image_size"]]
                # PSS: the memory held (RSS counts a page of the shared cache once per worker that read it)
                memory = r.get("pss_mib_per_epoch") or r["peak_rss_mib_per_epoch"]
                kind = "PSS at epoch end" if "pss_mib_per_epoch" in r else "peak RSS"
                flat = max(memory) - min(memory) <= 0.05 * min(memory)
                rows.append({"target": "cached pipeline epochs 2+ >= 5x ImageFolder, flat memory",
                             "measured": f"{ratio:.2f}x; {kind} {' / '.join(map(str, memory))} MiB",
                             "met": ratio >= 5 and flat,
                             "setting": f"{r['image_size']} px, data.cache={r['pipeline']}, "
                                        f"{pipeline['meta']['settings']}; {_machine_of(pipeline)}"})
    accuracy = _load("accuracy")
    if accuracy and "results" in accuracy:  # written by time_to_accuracy.py since issue 20, with its machine
        rows += _accuracy_rows(accuracy)
    return rows


def _accuracy_rows(accuracy: dict) -> list[dict]:
    """Issue 20: the recipe >= 97 % test in <= 0.25x the classic loop's time to its best, and faster than fastai's
    fine_tune to the same accuracy (one invocation, one machine)."""
    results, rows = accuracy["results"], []
    classic, fastai = results.get("classic"), results.get("fastai")
    for name, r in results.items():
        if not name.startswith("recipe"):
            continue
        acc, wall = r["test_accuracy"], r["wall_s"]
        parts, met = [f"{100 * acc:.1f} % in {wall:.0f} s"], acc >= 0.97
        if classic:
            ratio = wall / classic["time_to_best_s"]
            parts.append(f"{ratio:.2f}x classic's time to its best")
            met = met and ratio <= 0.25
        if fastai:
            reached = next((e["train_s"] + fastai["test_eval_s"] for e in fastai["epochs"]
                            if e["test_accuracy"] >= acc - 1e-9), None)
            parts.append(f"fastai to {100 * acc:.1f} %: " + (f"{reached:.0f} s" if reached else "never"))
            met = met and (reached is None or wall < reached)
        rows.append({"target": "recipe >= 97 % test in <= 0.25x the classic loop's time to its best, "
                               "faster than fastai's fine_tune to the same accuracy",
                     "measured": "; ".join(parts), "met": met and bool(classic) and bool(fastai),
                     "setting": f"{name}; {_machine_of(accuracy)}"})
    return rows


def write_summary(rows: list[dict], ran: dict[str, float]) -> str:
    lines = ["# Benchmark summary (targets of issues 6 and 20)", "",
             (f"Ran now on {describe(machine())}: {', '.join(f'{k} {v:.0f} s' for k, v in ran.items())}" if ran
              else "From the result files already in benchmarks/results/") + "; each row names the machine its "
             "result file records (machines differ: compare rows of one machine).", "",
             "| target | measured | met | setting |", "|---|---|---|---|"]
    lines += [f"| {r['target']} | {r['measured']} | {'yes' if r['met'] else 'NO'} | {r['setting']} |" for r in rows]
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "summary.md").write_text(text)
    (RESULTS / "summary.json").write_text(json.dumps({"ran_s": ran, "rows": rows}, indent=2) + "\n")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=list(BENCHMARKS))
    parser.add_argument("--summary-only", action="store_true", help="do not run anything; summarise the results")
    args = parser.parse_args()
    ran: dict[str, float] = {}
    if not args.summary_only:
        for name in args.only:
            script, *rest = BENCHMARKS[name][0]
            print(f"== {name}: {script} {' '.join(rest)}", flush=True)
            start = time.perf_counter()
            done = subprocess.run([sys.executable, str(HERE / script), *rest], check=False)
            if done.returncode:
                raise SystemExit(f"benchmark {script} failed with exit status {done.returncode}")
            ran[name] = time.perf_counter() - start
    print(write_summary(summarise(), ran))


if __name__ == "__main__":
    main()
