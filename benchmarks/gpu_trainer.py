"""Is the GPU fed? The full trainer's images/s as a fraction of the model step alone, same model, size and batch.

    python benchmarks/gpu_trainer.py [--backbone resnet50] [--image-size 224] [--batch-size 64] [--images 3000]
                                     [--epochs 4] [--workers auto] [--variants default every-step ...]
    # CPU check of the script itself, at tiny scale (figures mean nothing there):
    python benchmarks/gpu_trainer.py --backbone resnet10t --image-size 64 --batch-size 16 --images 160 --epochs 2 \
        --steps 5 --variants default

(1) the model step alone: synthetic tensors already on the device, forward + backward + optimizer step
    (benchmarks/gpu_amp.py's loop; bf16 autocast and channels_last on CUDA);
(2) the whole trainer (``plantpheno train``): synthetic leaf JPEGs (256 px, as PlantVillage's) through the image
    cache (``data.cache: memory``), batched augmentation, the loader workers, the transfer and the training loop,
    same backbone, size, batch and precision. Its figure is the per-epoch ``time/images_per_s`` that the run
    logs (loading included, validation not), the median of epochs 2+ (epoch 1 pays cuDNN autotuning and worker
    start).

Variants of (2): ``default`` (loss read back every ``training.check_every: auto`` = 32 steps on a GPU, the next
batch prefetched on a side stream, augmentation on the device), ``every-step`` (``training.check_every=1``: a host
sync per step, as before issue 20), ``loader-augment`` (``data.augment.on_device=off``: augmentation in the loader
workers). Target (issue 20): default >= 80 % of (1) at 224 px, ResNet-50, bf16. Writes
benchmarks/results/gpu_trainer.{json,md} on CUDA, gpu_trainer_cpu.{json,md} elsewhere, with the machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import timm
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from gpu_amp import images_per_second  # benchmarks/ is not a package
from machine import describe, machine

VARIANTS = {
    "default": [],
    "every-step": ["training.check_every=1"],
    "loader-augment": ["data.augment.on_device=off"],
}
TARGET = 0.80


def trainer_images_per_second(root: Path, out: Path, *, args: argparse.Namespace, overrides: list[str],
                              name: str) -> dict[str, object]:
    """Train on the synthetic folder; the per-epoch images/s the run logged and the median of epochs 2+."""
    from plantpheno.config import load_config
    from plantpheno.pipeline import train

    config = load_config("demo", [
        f"data.root={root}", f"output_dir={out}", f"run_name={name}", f"model.backbone={args.backbone}",
        "model.pretrained=false", f"data.image_size={args.image_size}", f"data.batch_size={args.batch_size}",
        f"data.num_workers={args.workers}", "data.cache=memory", "data.val_fraction=0.05", "data.test_fraction=0.05",
        f"training.epochs={args.epochs}", "training.warmup_epochs=0", "training.progress_bar=false",
        "tracking.backends=[]", "tracking.system_metrics_interval=0", "evaluation.bootstrap_samples=0", *overrides])
    result = train(config)
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    per_epoch = [r["time/images_per_s"] for r in rows]
    later = per_epoch[1:] or per_epoch
    return {"images_per_s_per_epoch": per_epoch, "images_per_s": statistics.median(later),
            "overrides": overrides}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--images", type=int, default=3000, help="synthetic training images (4 classes)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=30, help="timed steps of the model step alone")
    parser.add_argument("--workers", default="auto", help="data.num_workers")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--out", type=Path, default=None,
                        help="path stem of the .json/.md (default benchmarks/results/gpu_trainer[_cpu])")
    args = parser.parse_args()
    info = machine()  # before the runs: the load average it records is the machine's, not this benchmark's
    from plantpheno.data.synth import synthesize_disease

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    torch.backends.cudnn.benchmark = True
    amp = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if cuda else None
    torch.manual_seed(0)
    # gpu_amp draws targets from 10 classes; the trainer's head has 4 (a negligible difference in the step)
    step_alone = images_per_second(timm.create_model(args.backbone, num_classes=10), device=device,
                                   size=args.image_size, batch=args.batch_size, steps=args.steps, amp=amp,
                                   channels_last=True)
    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        # the folder has --images after the 5 % val and 5 % test splits are taken out
        per_class = round(args.images / 0.9 / 4)
        root = synthesize_disease(Path(tmp) / "leaves", per_class=per_class, image_size=256, seed=0)
        for name in args.variants:
            results[name] = trainer_images_per_second(root, Path(tmp) / "runs", args=args,
                                                      overrides=VARIANTS[name], name=name)
            results[name]["fraction_of_step"] = results[name]["images_per_s"] / step_alone
    precision = str(amp).removeprefix("torch.") if amp else "fp32"
    lines = [(f"# Trainer vs model step: {args.backbone}, {args.image_size} px, batch {args.batch_size}, "
              f"{precision} + channels_last"), "", f"Machine: {describe(info)}", "",
             f"Model step alone (synthetic tensors on the device): {step_alone:.1f} images/s.", "",
             "| trainer variant | images/s per epoch | median epochs 2+ | fraction of the model step |",
             "|---|---|---|---|"]
    for name, r in results.items():
        epochs = " / ".join(f"{v:.0f}" for v in r["images_per_s_per_epoch"])
        lines.append(f"| {name} | {epochs} | {r['images_per_s']:.1f} | {100 * r['fraction_of_step']:.0f} % |")
    if cuda and "default" in results:
        met = results["default"]["fraction_of_step"] >= TARGET
        lines += ["", f"Target: the default trainer >= {TARGET:.0%} of the model step: {'met' if met else 'NOT met'}."]
    elif not cuda:
        lines += ["", "No GPU here: this is the CPU check of the script; its fractions say nothing about a GPU."]
    text = "\n".join(lines) + "\n"
    print(text)
    out = args.out or HERE / "results" / ("gpu_trainer" if cuda else "gpu_trainer_cpu")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text)
    arguments = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    out.with_suffix(".json").write_text(json.dumps({"machine": info, "args": arguments, "precision": precision,
                                                   "model_step_images_per_s": step_alone, "trainer": results},
                                                  indent=2) + "\n")


if __name__ == "__main__":
    main()
