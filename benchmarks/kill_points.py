"""kill -9 at random moments of a training run, then resume; how many checkpoints are ever unusable?

    python benchmarks/kill_points.py [--kills 30] [--epochs 8] [--seed 0]

Small runs (synthetic leaves, test_resnet, CPU) are started and killed with SIGKILL at a random moment
(uniform over the time an uninterrupted run of the same config took, measured first and again whenever a
run goes through unkilled, as other work on the machine changes its pace: interpreter start-up,
the image check, epochs, checkpoint writes and the final evaluation all get hit), resumed, killed again,
and so on; a run that finishes is checked and a new one started, until ``--kills`` kills; the last run is
then resumed to the end. After every kill: does each checkpoint on disk load with
``torch.load(weights_only=True)``, does the run claim to be running (``run.json`` says running but nobody
holds its lock: it is reported as crashed, which is right), how many temporary files did the kill leave.
For every finished run: completed, each epoch logged once in order, no temporary file left. Writes
benchmarks/results/kill_points.{json,md} with the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]


def machine() -> dict[str, object]:
    """CPU model and ISA flags, cores, torch version, GPU: recorded with every figure."""
    model, flags = platform.processor(), []
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
        model = next((ln.split(":", 1)[1].strip() for ln in info if ln.startswith("model name")), model)
        flags = next((ln.split(":", 1)[1].split() for ln in info if ln.startswith("flags")), [])
        flags = [f for f in flags if f.startswith(("avx", "sse4", "amx", "fma"))]
    except OSError:
        pass
    return {"cpu": model, "isa": sorted(set(flags)), "cores": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "torch": torch.__version__, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/plantpheno-kill-points"))
    args = parser.parse_args()

    from plantpheno.data.synth import synthesize_disease
    from plantpheno.run.folder import RunDir
    from plantpheno.training.checkpoint import FORMAT

    rng = random.Random(args.seed)
    work = args.work / f"seed{args.seed}-{int(time.time())}"
    leaves = synthesize_disease(work / "leaves", per_class=16, image_size=48, seed=1)
    config = work / "c.yaml"
    config.write_text(yaml.safe_dump({
        "seed": 0, "device": "cpu", "output_dir": str(work / "runs"), "run_name": "run",
        "data": {"root": str(leaves), "image_size": 32, "batch_size": 8, "num_workers": 0},
        "model": {"backbone": "test_resnet"}, "training": {"epochs": args.epochs, "progress_bar": False},
        "evaluation": {"bootstrap_samples": 50}, "tracking": {"system_metrics_interval": 0}}))
    runs = work / "runs" / "default"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "plantpheno", "train", str(config), "run_name=uninterrupted"],
                   check=True, capture_output=True, env=env)
    span = time.perf_counter() - start
    print(f"an uninterrupted run took {span:.1f} s; kills are drawn uniformly in [0, {span:.1f}] s", flush=True)
    records: list[dict] = []
    finished_runs: list[dict] = []
    number, command = 0, None
    while sum(1 for r in records if not r["process_had_finished"]) < args.kills:
        run = runs / f"run{number}"
        if command is None:
            command = [sys.executable, "-m", "plantpheno", "train", str(config), f"run_name={run.name}"]
        stale = set(run.rglob("*.tmp")) if run.exists() else set()
        delay = rng.uniform(0, span)
        fresh = "--resume" not in command
        began = time.perf_counter()
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        try:
            proc.wait(timeout=delay)
            finished = True
            if fresh and proc.returncode == 0:  # the machine's load changes: kill within what a run takes now
                span = time.perf_counter() - began
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            finished = False
        temps = set(run.rglob("*.tmp")) if run.exists() else set()
        unusable, loaded = [], 0
        for path in sorted((run / "checkpoints").glob("*.pt")) if (run / "checkpoints").is_dir() else []:
            try:
                assert torch.load(path, map_location="cpu", weights_only=True)["format"] == FORMAT
                loaded += 1
            except Exception as exc:  # noqa: BLE001 - any failure to load is what this counts
                unusable.append(f"{path.name}: {exc}")
        status = RunDir(run).current_status() if run.exists() else None
        records.append({"run": run.name, "after_s": round(delay, 2), "of_s": round(span, 1),
                        "process_had_finished": finished,
                        "exit_status": proc.returncode, "checkpoints_loaded": loaded, "unusable": unusable,
                        "status_after": status, "new_temp_files": len(temps - stale),
                        "earlier_temp_files_still_there": len(stale & temps), "epochs_logged": _epochs(run)})
        print(json.dumps(records[-1]), flush=True)
        if finished and status == "completed":  # this run is done: check it, and start the next one
            finished_runs.append(_finished(run, args.epochs))
            number, command = number + 1, None
        elif (run / "config.yaml").is_file():
            command = [sys.executable, "-m", "plantpheno", "train", "--resume", str(run)]
        else:  # killed before the run folder held its config: start it again (the name is still free)
            command = None
        _write(args, span, records, finished_runs)
    if command is not None and command[-2] == "--resume":  # the last run was killed: it must still finish
        subprocess.run(command, capture_output=True, text=True, env=env)
        finished_runs.append(_finished(Path(command[-1]), args.epochs))
    print(json.dumps(_write(args, span, records, finished_runs), indent=2))


def _epochs(run: Path) -> list[int]:
    log = run / "metrics.jsonl"
    return [json.loads(line)["epoch"] for line in log.read_text().splitlines()] if log.is_file() else []


def _finished(run: Path, epochs: int) -> dict[str, object]:
    from plantpheno.run.folder import RunDir

    return {"run": run.name, "status": RunDir(run).current_status(),
            "epochs_logged_once_in_order": _epochs(run) == list(range(1, epochs + 1)),
            "temp_files": len(list(run.rglob("*.tmp")))}


def _write(args: argparse.Namespace, span: float, records: list[dict],
           finished_runs: list[dict]) -> dict[str, object]:
    """The summary so far (written after every kill, so an interrupted benchmark still leaves its figures)."""
    summary = {
        "kills": sum(1 for r in records if not r["process_had_finished"]),
        "checkpoint_loads_after_a_kill": sum(r["checkpoints_loaded"] for r in records if not r["process_had_finished"]),
        "unusable_checkpoints": sum(len(r["unusable"]) for r in records),
        "claimed_running_after_kill": sum(1 for r in records if r["status_after"] == "running"),
        "kills_that_left_a_temp_file": sum(1 for r in records if r["new_temp_files"]),
        "processes_that_ended_in_an_error": sum(1 for r in records if r["process_had_finished"]
                                                and r["exit_status"] != 0),
        "runs_finished": len(finished_runs),
        "runs_finished_completed": sum(1 for r in finished_runs if r["status"] == "completed"),
        "runs_with_each_epoch_logged_once_in_order": sum(1 for r in finished_runs
                                                         if r["epochs_logged_once_in_order"]),
        "temp_files_left_in_finished_runs": sum(r["temp_files"] for r in finished_runs),
    }
    result = {"args": {k: str(v) for k, v in vars(args).items()}, "machine": machine(),
              "uninterrupted_run_s": round(span, 1), "summary": summary, "finished_runs": finished_runs,
              "records": records}
    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "kill_points.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# kill -9 at random moments, then resume", "",
             f"`python benchmarks/kill_points.py --kills {args.kills} --epochs {args.epochs} --seed {args.seed}`", "",
             f"Machine: {result['machine']}; kill times are drawn in [0, T] s after each start, T the time an "
             f"uninterrupted run took (measured first, and again whenever one went through; latest {span:.0f} s); "
             f"a run that finishes is followed by a new one", "",
             "| figure | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in summary.items()]
    (out / "kill_points.md").write_text("\n".join(lines) + "\n")
    return summary

if __name__ == "__main__":
    main()
