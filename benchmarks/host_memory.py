"""Host memory of a training run with training.release_memory off and on: what the process holds at each epoch's end.

    python benchmarks/host_memory.py [--data DIR] [--enlarge 1536] [--limit 400] [--epochs 6] [--threads 1 2]
                                     [--workers 2] [--repeats 1] [--image-size 224] [--backbone resnet10t] [--out STEM]

Runs ``plantpheno train`` in a child process (not pretrained, ``data.cache: memory``, --workers loader workers, no
tracking) on the class folders under --data, enlarged to --enlarge px first (camera-sized photos, whose decoding
leaves large freed buffers behind; 0 = as they are). For each thread count it runs ``training.release_memory`` off
and on side by side, --repeats times, alternating which goes first. Each time the run logs an epoch it reads the
training process's PSS (its own pages, with shared ones split among the processes mapping them), its loader workers'
summed PSS, and the trainer's CPU seconds and minor page faults over the epoch, and takes the epoch times the run
logged. The figures: the median PSS of epochs 2+ (epoch 1 fills the cache), the trainer's and the job's (trainer +
workers), and the ratio of "on" to "off", and the same for the epoch time, the trainer's CPU seconds and its page
faults (what releasing costs). Writes benchmarks/results/host_memory.{json,md} (or --out) with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from data_pipeline import DEFAULT_DATA, enlarged_copy  # benchmarks/ is not a package
from machine import describe, machine


def _pss_mib(proc: psutil.Process) -> float | None:
    try:
        return proc.memory_full_info().pss / 2**20
    except psutil.Error:
        return None


def _cpu_and_faults(proc: psutil.Process) -> tuple[float, int] | None:
    """The process's CPU seconds (user + system) and minor page faults so far (Linux's /proc/PID/stat)."""
    try:
        times = proc.cpu_times()
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (psutil.Error, OSError):
        return None
    return times.user + times.system, int(fields[7])  # field 10, minflt, counted from field 3 (state)


def run_once(root: Path, work: Path, *, release: bool, threads: int, repeat: int,
             args: argparse.Namespace) -> dict[str, Any]:
    """Train once in a child process; per logged epoch, the trainer's and its workers' PSS, the trainer's CPU
    seconds and minor page faults (a page the trainer gave back costs a fault when it is used again) and the
    epoch time the run logged."""
    name = f"t{threads}_{'on' if release else 'off'}_{repeat}"
    config = {"seed": 0, "device": "cpu", "output_dir": str(work / "runs"), "run_name": name,
              "data": {"root": str(root), "image_size": args.image_size, "batch_size": args.batch_size,
                       "num_workers": args.workers, "cache": "memory", "checks": {"enabled": False}},
              "model": {"backbone": args.backbone, "pretrained": False},
              "training": {"epochs": args.epochs, "threads": threads, "progress_bar": False,
                           "release_memory": release},
              "evaluation": {"bootstrap_samples": 0}, "tracking": {"backends": [], "system_metrics_interval": 0}}
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    errors = work / f"{name}.stderr"  # a file, not a pipe: a full pipe would stall the run
    with errors.open("w") as stderr:
        child = subprocess.Popen([sys.executable, "-m", "plantpheno", "train", str(path)], env=env,
                                 stdout=subprocess.DEVNULL, stderr=stderr)
    proc = psutil.Process(child.pid)
    log = work / "runs" / "default" / name / "metrics.jsonl"
    trainer, workers, cpu_s, faults, seen = [], [], [], [], 0
    started = time.perf_counter()
    last = _cpu_and_faults(proc)
    while child.poll() is None:
        lines = log.read_text().splitlines() if log.is_file() else []
        if len(lines) > seen:  # an epoch was logged: read the memory now, while the workers still run
            seen = len(lines)
            now = _cpu_and_faults(proc)
            if now is not None and last is not None:
                cpu_s.append(round(now[0] - last[0], 2))
                faults.append(now[1] - last[1])
                last = now
            mine = _pss_mib(proc)
            try:
                kids = [_pss_mib(c) for c in proc.children(recursive=True)]
            except psutil.Error:
                kids = []
            if mine is not None:
                trainer.append(round(mine, 1))
                workers.append(round(sum(k for k in kids if k is not None), 1))
        time.sleep(0.1)
    if child.returncode != 0:
        raise SystemExit(f"{name}: plantpheno train exited {child.returncode}:\n{errors.read_text()[-3000:]}")
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    epoch_s = [r["time/epoch_s"] for r in rows]
    later = slice(1, None) if len(trainer) > 1 else slice(None)
    return {"release_memory": release, "threads": threads, "repeat": repeat, "trainer_pss_mib": trainer,
            "workers_pss_mib": workers, "epoch_s": epoch_s, "trainer_cpu_s": cpu_s, "trainer_minor_faults": faults,
            "trainer_pss_median_mib": statistics.median(trainer[later]),
            "trainer_cpu_s_median": statistics.median(cpu_s[later] or cpu_s or [0.0]),
            "trainer_minor_faults_median": statistics.median(faults[later] or faults or [0]),
            "total_pss_median_mib": statistics.median(t + w for t, w in zip(trainer[later], workers[later],
                                                                             strict=True)),
            "epoch_s_median": statistics.median(epoch_s[later] or epoch_s),
            "wall_s": round(time.perf_counter() - started, 1)}


def summarise_pair(threads: int, offs: list[dict[str, Any]], ons: list[dict[str, Any]]) -> dict[str, Any]:
    """Off against on for one thread count: each figure's median over the repeats, and the ratios."""
    def median(runs: list[dict[str, Any]], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    pair = {"threads": threads, "repeats": len(offs)}
    for name, key in (("pss", "trainer_pss_median_mib"), ("total", "total_pss_median_mib"),
                      ("epoch_s", "epoch_s_median"), ("cpu_s", "trainer_cpu_s_median"),
                      ("faults", "trainer_minor_faults_median")):
        pair[f"{name}_off"], pair[f"{name}_on"] = median(offs, key), median(ons, key)
    for name in ("pss", "total", "epoch_s", "cpu_s"):
        pair[f"{name}_ratio"] = pair[f"{name}_on"] / pair[f"{name}_off"]
    pair["epoch_s_pair_ratios"] = [on["epoch_s_median"] / off["epoch_s_median"]
                                   for off, on in zip(offs, ons, strict=True)]
    return pair


def markdown(results: list[dict[str, Any]], pairs: list[dict[str, Any]], info: dict[str, Any],
             args: argparse.Namespace) -> str:
    data = f"{args.limit} photos enlarged to {args.enlarge} px" if args.enlarge else "the photos as they are"
    title = (f"# Host memory with training.release_memory off and on: {args.backbone}, {args.image_size} px, "
             f"batch {args.batch_size}, data.cache memory, {args.workers} workers, {args.epochs} epochs on {data}")
    lines = [title, "",
             f"Machine: {describe(info)}", "",
             ("| threads | release_memory | repeat | trainer PSS per epoch (MiB) | workers PSS (MiB) | epoch s "
              "| trainer CPU s | trainer minor faults |"),
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['threads']} | {'on' if r['release_memory'] else 'off'} | {r['repeat']} | "
                     f"{' / '.join(f'{v:.0f}' for v in r['trainer_pss_mib'])} | "
                     f"{' / '.join(f'{v:.0f}' for v in r['workers_pss_mib'])} | "
                     f"{' / '.join(f'{v:.1f}' for v in r['epoch_s'])} | "
                     f"{' / '.join(f'{v:.1f}' for v in r['trainer_cpu_s'])} | "
                     f"{' / '.join(str(v) for v in r['trainer_minor_faults'])} |")
    lines += ["", "Medians of epochs 2+ (epoch 1 fills the cache), then the median over the repeats:", "",
              ("| threads | trainer PSS off (MiB) | on | on / off | trainer + workers off (MiB) | on | on / off "
               "| epoch s off | on | on / off (each pair) | trainer CPU s off | on | minor faults off | on |"),
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in pairs:
        each = ", ".join(f"{v:.2f}" for v in p["epoch_s_pair_ratios"])
        lines.append(f"| {p['threads']} | {p['pss_off']:.0f} | {p['pss_on']:.0f} | {p['pss_ratio']:.2f}x | "
                     f"{p['total_off']:.0f} | {p['total_on']:.0f} | {p['total_ratio']:.2f}x | "
                     f"{p['epoch_s_off']:.1f} | {p['epoch_s_on']:.1f} | {p['epoch_s_ratio']:.2f}x ({each}) | "
                     f"{p['cpu_s_off']:.1f} | {p['cpu_s_on']:.1f} | {p['faults_off']:.0f} | {p['faults_on']:.0f} |")
    lines += ["", ("PSS is read each time the run logs an epoch, after the trainer's epoch-end release when it is "
                   "on. The workers are forked from the trainer, so pages it frees that they share move into their "
                   "PSS: the trainer + workers sum is the memory the job holds. The workers keep up to 512 MiB of "
                   "freed heap each on purpose (plantpheno.data.datasets.fixed_malloc_mmap_threshold: re-faulting "
                   "it per batch halved the images/s); the release acts in the training process only. Epoch times "
                   "vary by 10-30 % between runs on a shared 2-core machine: read an epoch-time ratio near 1 as no "
                   "measurable cost.")]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="class folders of images")
    parser.add_argument("--enlarge", type=int, default=1536, metavar="PX", help="enlarge a copy first; 0 = no")
    parser.add_argument("--limit", type=int, default=400, help="with --enlarge: how many images to copy")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--workers", type=int, default=2, help="data.num_workers (0: the training process loads)")
    parser.add_argument("--repeats", type=int, default=1, help="off/on pairs per thread count, order alternating")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--backbone", default="resnet10t")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "host_memory",
                        help="path stem of the .json/.md")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        raise SystemExit(f"--data {args.data}: no such folder (the PlantVillage subset lives in ../shared/data)")
    info = machine()  # before the runs: the load average it records is the machine's, not this benchmark's
    results, pairs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        root = enlarged_copy(args.data, work / "photos", side=args.enlarge, limit=args.limit) if args.enlarge \
            else args.data
        for threads in args.threads:
            offs, ons = [], []
            for repeat in range(args.repeats):  # off then on, then on then off: neither always runs second
                order = (False, True) if repeat % 2 == 0 else (True, False)
                for release in order:
                    run = run_once(root, work, release=release, threads=threads, repeat=repeat, args=args)
                    results.append(run)
                    (ons if release else offs).append(run)
            pairs.append(summarise_pair(threads, offs, ons))
    text = markdown(results, pairs, info, args)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text)
    arguments = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    args.out.with_suffix(".json").write_text(json.dumps({"machine": info, "args": arguments, "runs": results,
                                                         "pairs": pairs}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
