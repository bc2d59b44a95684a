"""channels_last vs the default (contiguous) memory format on CPU: training step and inference, per backbone.

    python benchmarks/cpu_channels_last.py [--image-size 128] [--batch-size 32] [--steps 4]

Synthetic tensors, the model step alone (no data loading), torch's threads as set by
``training.threads: auto``. The last column is what ``training.channels_last: auto`` picks for the
backbone on CPU (BatchNorm CNNs without LayerNorm). Writes benchmarks/results/cpu_channels_last.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import timm
import torch

from plantpheno.device import set_threads
from plantpheno.models import wants_channels_last

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, machine  # benchmarks/ is not a package; records the machine

BACKBONES = ("resnet10t", "resnet18", "mobilenetv3_small_100", "tf_efficientnet_lite0", "efficientnet_b0",
             "convnext_atto")


def _model(name: str, channels_last: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=15)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def _input(batch: int, size: int, channels_last: bool) -> torch.Tensor:
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def train_speed(name: str, *, size: int, batch: int, steps: int, channels_last: bool) -> float:
    model, x = _model(name, channels_last), _input(batch, size, channels_last)
    y = torch.randint(0, 15, (batch,), generator=torch.Generator().manual_seed(1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # warm-up: oneDNN picks its kernels
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - start)


@torch.inference_mode()
def infer_speed(name: str, *, size: int, batch: int, steps: int, channels_last: bool) -> float:
    model, x = _model(name, channels_last).eval(), _input(2 * batch, size, channels_last)
    model(x)
    start = time.perf_counter()
    for _ in range(steps):
        model(x)
    return steps * len(x) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES))
    args = parser.parse_args()
    info = machine()  # before the runs: the load average it records is the machine's, not this benchmark's
    threads = set_threads("auto")
    rows = []
    for name in args.backbones:
        kw = {"size": args.image_size, "batch": args.batch_size, "steps": args.steps}
        row = {"backbone": name,
               "train_img_s": train_speed(name, channels_last=False, **kw),
               "train_img_s_cl": train_speed(name, channels_last=True, **kw),
               "infer_img_s": infer_speed(name, channels_last=False, **kw),
               "infer_img_s_cl": infer_speed(name, channels_last=True, **kw),
               "auto_on_cpu": wants_channels_last("auto", torch.device("cpu"), timm.create_model(name))}
        rows.append(row)
        print(row, flush=True)
    lines = [f"# channels_last on CPU ({threads} threads, {args.image_size} px, train batch {args.batch_size}, "
             f"inference batch {2 * args.batch_size})", "",
             "| backbone | train img/s | + channels_last | ratio | inference img/s | + channels_last | ratio | "
             "auto picks |", "|---|---|---|---|---|---|---|---|"]
    lines[1:1] = ["", f"Machine: {describe(info)}"]
    for r in rows:
        lines.append(f"| {r['backbone']} | {r['train_img_s']:.1f} | {r['train_img_s_cl']:.1f} | "
                     f"{r['train_img_s_cl'] / r['train_img_s']:.2f}x | {r['infer_img_s']:.1f} | "
                     f"{r['infer_img_s_cl']:.1f} | {r['infer_img_s_cl'] / r['infer_img_s']:.2f}x | "
                     f"{'channels_last' if r['auto_on_cpu'] else 'contiguous'} |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "cpu_channels_last.md").write_text(text)
    (out / "cpu_channels_last.json").write_text(json.dumps({"machine": info, "args": vars(args), "threads": threads, "rows": rows},
                                                           indent=2) + "\n")


if __name__ == "__main__":
    main()
