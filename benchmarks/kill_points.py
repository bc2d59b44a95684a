"""kill -9 at random moments of a training run, then resume; how many checkpoints are ever unusable?

    python benchmarks/kill_points.py [--kills 30] [--epochs 8] [--seed 0]

One small run (synthetic leaves, test_resnet, CPU) is started, then killed with SIGKILL at a random moment
(uniform over the time an uninterrupted run of the same config took, measured first: interpreter start-up,
the image check, epochs, checkpoint writes and the final evaluation all get hit), then resumed, killed again, and so on ``--kills`` times; a last resume must
finish. After every kill it records: whether each checkpoint on disk loads with ``torch.load(weights_only=True)``,
whether the run claims to be running (``run.json`` says running but nobody holds its lock: reported as
crashed, which is right) and how many temporary files the kill left; at the end, whether the last resume
finished with each epoch logged once and no temporary file left. Writes benchmarks/results/kill_points.{json,md} with the machine it ran on.
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
    from plantpheno.rundir import RunDir
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
    run = work / "runs" / "default" / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "plantpheno", "train", str(config), "run_name=uninterrupted"],
                   check=True, capture_output=True, env=env)
    span = time.perf_counter() - start
    print(f"an uninterrupted run took {span:.1f} s; kills are drawn uniformly in [0, {span:.1f}] s", flush=True)
    command = [sys.executable, "-m", "plantpheno", "train", str(config)]
    records = []
    for i in range(args.kills):
        stale = set(run.rglob("*.tmp")) if run.exists() else set()
        delay = rng.uniform(0, span)
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        try:
            proc.wait(timeout=delay)
            finished = True
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
        records.append({"kill": i + 1, "after_s": round(delay, 2), "process_had_finished": finished,
                        "exit_status": proc.returncode, "checkpoints_loaded": loaded, "unusable": unusable,
                        "status_after": status, "new_temp_files": len(temps - stale),
                        "earlier_temp_files_still_there": len(stale & temps),
                        "epochs_logged": len((run / "metrics.jsonl").read_text().splitlines())
                        if (run / "metrics.jsonl").is_file() else 0})
        print(json.dumps(records[-1]), flush=True)
        if finished and status == "completed":
            break
        command = [sys.executable, "-m", "plantpheno", "train", "--resume", str(run)]
        _write(args, span, records, run, final=None)
    final = subprocess.run(command, capture_output=True, text=True, env=env)
    print(json.dumps(_write(args, span, records, run, final=final), indent=2))


def _write(args: argparse.Namespace, span: float, records: list[dict], run: Path,
           final: subprocess.CompletedProcess | None) -> dict[str, object]:
    """The summary so far (written after every kill, so an interrupted benchmark still leaves its figures)."""
    from plantpheno.rundir import RunDir

    log = run / "metrics.jsonl"
    epochs = [json.loads(line)["epoch"] for line in log.read_text().splitlines()] if log.is_file() else []
    summary = {
        "kills": sum(1 for r in records if not r["process_had_finished"]),
        "checkpoint_loads": sum(r["checkpoints_loaded"] for r in records),
        "unusable_checkpoints": sum(len(r["unusable"]) for r in records),
        "claimed_running_after_kill": sum(1 for r in records if r["status_after"] == "running"),
        "kills_that_left_a_temp_file": sum(1 for r in records if r["new_temp_files"]),
        "final_resume_exit_status": final.returncode if final is not None else "not run yet",
        "final_status": RunDir(run).current_status() if final is not None else "not run yet",
        "epochs_logged_once_in_order": epochs == list(range(1, len(epochs) + 1)),
        "epochs_logged": len(epochs),
        "temp_files_at_the_end": len(list(run.rglob("*.tmp"))) if final is not None else "not run yet",
    }
    result = {"args": {k: str(v) for k, v in vars(args).items()}, "machine": machine(),
              "uninterrupted_run_s": round(span, 1), "summary": summary, "records": records}
    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "kill_points.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# kill -9 at random moments, then resume", "",
             f"`python benchmarks/kill_points.py --kills {args.kills} --epochs {args.epochs} --seed {args.seed}`", "",
             f"Machine: {result['machine']}; an uninterrupted run took {span:.0f} s (kill times are drawn in "
             f"[0, {span:.0f}] s after each start)", "", "| figure | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in summary.items()]
    (out / "kill_points.md").write_text("\n".join(lines) + "\n")
    return summary

if __name__ == "__main__":
    main()
