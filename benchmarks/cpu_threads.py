"""Training images/s on the CPU for torch thread counts x DataLoader worker counts (same model, data, batch).

    python benchmarks/cpu_threads.py [--backbone resnet10t] [--image-size 96] [--epochs 3] [--cache memory]

Runs ``plantpheno train`` on the PlantVillage subset (or --data, an image folder or splits.csv) in a fresh
process per setting (``torch.set_num_threads`` is per process), and reports the mean images/s of epochs 2+
as logged by the trainer. ``training.threads: auto`` is what the config does by default; the other rows
are fixed counts. Writes benchmarks/results/cpu_threads.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, machine  # benchmarks/ is not a package; records the machine

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "plantvillage-subset" / "splits.csv"


def run(data: Path, out: Path, *, threads: str, workers: int, args: argparse.Namespace) -> float:
    cmd = [sys.executable, "-m", "plantpheno", "train", "classify_scratch", "--data-path", str(data),
           f"output_dir={out}", f"run_name=t{threads}-w{workers}", f"model.backbone={args.backbone}",
           f"data.image_size={args.image_size}", f"training.epochs={args.epochs}", "training.warmup_epochs=0",
           f"data.num_workers={workers}", f"data.cache={args.cache}", f"training.threads={threads}",
           "training.progress_bar=false", "tracking.system_metrics_interval=0", "evaluation.bootstrap_samples=0",
           "training.early_stopping.patience=null"]
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO)
    log = out / "classify" / f"t{threads}-w{workers}" / "metrics.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    later = [r["time/images_per_s"] for r in rows[1:]] or [rows[0]["time/images_per_s"]]
    return sum(later) / len(later)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--backbone", default="resnet10t")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--cache", default="memory")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    settings = [("auto", w) for w in (0, max(1, cores // 2))]
    settings += [(str(t), w) for t in sorted({1, max(1, cores // 2), cores}) for w in sorted({0, 1, max(1, cores // 2)})]
    results = []
    info = machine()
    with tempfile.TemporaryDirectory() as tmp:
        for threads, workers in settings:
            ips = run(args.data, Path(tmp), threads=threads, workers=workers, args=args)
            results.append({"threads": threads, "workers": workers, "images_per_s": round(ips, 1)})
            print(results[-1], flush=True)
    lines = [f"# CPU threads x workers ({cores} cores): {args.backbone} @ {args.image_size} px, cache {args.cache}",
             "", f"Machine: {describe(info)}", "",
             "| training.threads | data.num_workers | images/s (epochs 2+) |", "|---|---|---|"]
    lines += [f"| {r['threads']} | {r['workers']} | {r['images_per_s']} |" for r in results]
    text = "\n".join(lines)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cpu_threads.md").write_text(text + "\n")
    (args.out / "cpu_threads.json").write_text(json.dumps({"machine": info, "cores": cores, "args": {k: str(v) for k, v in
                                                           vars(args).items()}, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
