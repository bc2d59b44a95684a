"""The CUDA paths end to end on one GPU: plantpheno train with fp32, bf16, fp16 (GradScaler), channels_last,
torch.compile, the frozen-backbone feature cache, and the torchrun launch; each run must finish and its
test evaluation must be sane. Also reports the trainer's images/s for each precision.

    python benchmarks/gpu_paths.py [--per-class 150] [--epochs 4] [--image-size 128]

Needs CUDA (exits with a message otherwise). Data: synthetic leaves drawn by `plantpheno data synth`.
Writes benchmarks/results/gpu_paths.{json,md} (or into --out).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, machine  # benchmarks/ is not a package; records the machine

REPO = Path(__file__).resolve().parents[1]


def _epoch_ips(run_dir: Path) -> float:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    ips = [r["time/images_per_s"] for r in rows if "time/images_per_s" in r]
    return max(ips[1:] or ips)  # epoch 1 carries cuDNN autotuning / compilation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=150)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--device", default="cuda", help="cpu only checks this script itself")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("gpu_paths.py needs a CUDA GPU")
    from plantpheno.config import load_config
    from plantpheno.data.synth import synthesize_disease
    from plantpheno.pipeline import train
    from plantpheno.recipes import resolve as resolve_recipe

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "leaves"
        synthesize_disease(data, per_class=args.per_class, image_size=args.image_size, seed=0)
        base = [f"data.root={data}", f"output_dir={tmp}/runs", f"data.image_size={args.image_size}",
                "data.batch_size=64", "data.num_workers=4", f"training.epochs={args.epochs}",
                "training.progress_bar=false", "training.warmup_epochs=0", "tracking.system_metrics_interval=0", f"device={args.device}",
                f"model.backbone={args.backbone}", "model.pretrained=false", "evaluation.bootstrap_samples=0"]
        variants = {
            "fp32": ["training.mixed_precision=off", "training.channels_last=off"],
            "fp32+channels_last": ["training.mixed_precision=off", "training.channels_last=on"],
            "bf16+channels_last": ["training.mixed_precision=bf16", "training.channels_last=on"],
            "fp16+channels_last (GradScaler)": ["training.mixed_precision=fp16", "training.channels_last=on"],
            "auto (defaults on CUDA)": [],
            "bf16+compile": ["training.mixed_precision=bf16", "training.compile=true"],
            "frozen + feature cache (bf16)": ["training.mixed_precision=bf16", "model.freeze_backbone=true",
                                              "training.feature_cache=true"],
        }
        for name, extra in variants.items():
            config = load_config("demo", [*base, f"run_name=v{len(results)}", *extra])
            start = time.perf_counter()
            try:
                result = train(config)
                meta = json.loads((result.run_dir / "run.json").read_text())
                results[name] = {"ok": True, "wall_s": time.perf_counter() - start,
                                 "train_images_per_s": _epoch_ips(result.run_dir),
                                 "test_accuracy": result.metrics["accuracy"],
                                 "status": meta.get("status")}
            except Exception as exc:  # report every variant, not just the first failure
                results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                                 "trace": traceback.format_exc()[-2000:]}
            print(name, {k: v for k, v in results[name].items() if k != "trace"}, flush=True)

        # the torchrun launch on one GPU: a world of 1 runs the single-process path (NCCL refuses two ranks on
        # one device, so the NCCL collectives need a machine with 2+ GPUs)
        cfg = Path(tmp) / "ddp.yaml"
        cfg.write_text(resolve_recipe("demo").read_text())
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m",
               "plantpheno", "train", str(cfg), *base, "run_name=ddp", "training.mixed_precision=bf16"]
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
        run_json = Path(tmp) / "runs" / "demo" / "ddp" / "run.json"
        meta = json.loads(run_json.read_text()) if run_json.is_file() else {}
        results["torchrun launch, world of 1 (bf16)"] = {
            "ok": proc.returncode == 0 and bool(meta), "returncode": proc.returncode,
            "wall_s": time.perf_counter() - start, "distributed": meta.get("distributed"),
            "stderr_tail": proc.stderr[-1500:] if proc.returncode else ""}
        print("torchrun", results["torchrun launch, world of 1 (bf16)"], flush=True)

    device = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "CPU"
    lines = [f"# CUDA paths, {args.backbone} @ {args.image_size} px, batch 64, {device}, torch {torch.__version__}",
             "", f"Machine: {describe(machine())}", "", "| variant | ok | train images/s (best epoch after 1st) | test accuracy | wall s |", "|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {'yes' if r['ok'] else 'NO: ' + r.get('error', str(r.get('returncode')))[:120]} | "
                     f"{r.get('train_images_per_s', float('nan')):.0f} | {r.get('test_accuracy', float('nan')):.3f} | "
                     f"{r.get('wall_s', float('nan')):.1f} |")
    text = "\n".join(lines)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_paths.md").write_text(text + "\n")
    (args.out / "gpu_paths.json").write_text(json.dumps({"machine": machine(), "device": device, "torch": torch.__version__,
                                                         "args": {k: str(v) for k, v in vars(args).items()},
                                                         "results": results}, indent=2) + "\n")
    if not all(r["ok"] for r in results.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
