"""Training images/s on one GPU: fp32 vs AMP (bf16/fp16) + channels_last, same model, data and batch.

    python benchmarks/gpu_amp.py [--backbone resnet50] [--image-size 224] [--batch-size 64] [--steps 30]

Synthetic tensors on the device (no data loading), so the figure is the model step alone. Without CUDA
it runs the CPU comparison (fp32 vs channels_last) so the script itself stays tested; the GPU figures
need a GPU machine. Writes benchmarks/results/gpu_amp.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import timm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, machine  # benchmarks/ is not a package; records the machine


def images_per_second(model: torch.nn.Module, *, device: torch.device, size: int, batch: int, steps: int,
                      amp: torch.dtype | None, channels_last: bool) -> float:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device, memory_format=fmt).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,), device=device)
    for i in range(steps + 5):  # 5 warm-up steps (cuDNN autotuning, allocator)
        if i == 5:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    torch.backends.cudnn.benchmark = True
    amp = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if cuda else None
    variants = {"fp32": (None, False), "fp32+channels_last": (None, True)}
    if cuda:
        variants[f"{str(amp).removeprefix('torch.')}+channels_last"] = (amp, True)
    results = {}
    for name, (dtype, cl) in variants.items():
        torch.manual_seed(0)
        model = timm.create_model(args.backbone, num_classes=10)
        results[name] = images_per_second(model, device=device, size=args.image_size, batch=args.batch_size,
                                          steps=args.steps, amp=dtype, channels_last=cl)
    base = results["fp32"]
    device_name = torch.cuda.get_device_name(0) if cuda else f"CPU ({torch.get_num_threads()} threads)"
    print(f"{args.backbone} @ {args.image_size}px, batch {args.batch_size}, {device_name}")
    print(f"Machine: {describe(machine())}")
    for name, ips in results.items():
        print(f"  {name:28s} {ips:9.1f} images/s   x{ips / base:.2f} vs fp32")
    out = Path(__file__).parent / "results" / "gpu_amp.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"machine": machine(), "device": device_name, "args": vars(args), "images_per_s": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
