"""Trainer overhead: plantpheno's Trainer vs a hand-written minimal PyTorch loop, same model/data/batch.

    python benchmarks/trainer_overhead.py [--backbone resnet10t] [--image-size 64] [--batch-size 32]
                                          [--steps 60] [--repeats 3]

Both loops train the same freshly seeded model on the same pre-made batches held in memory (no
decoding, no augmentation), so the difference is the loop itself: callbacks, metric accumulation,
NaN checks, progress bookkeeping. Runs alternate (minimal, trainer, minimal, ...) and the median of
``--repeats`` is reported. Writes benchmarks/results/trainer_overhead.{json,md}. Target: <= 1.02x.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import timm
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from plantpheno.config import validate_config
from plantpheno.data.datasets import EpochSampler, Loaders
from plantpheno.reporting import RecordingReporter
from plantpheno.training.callbacks import Console, EarlyStopping
from plantpheno.training.optim import build_optimizer, build_scheduler
from plantpheno.training.objectives import Classification
from plantpheno.training.loop import Networks, Optimization, TrainingLoop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, machine  # benchmarks/ is not a package; records the machine


class TensorSet(Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, item):
        index = item[0] if isinstance(item, tuple) else item
        return self.x[index], self.y[index]


def make_model(backbone: str) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(backbone, num_classes=10)


def minimal_loop(model: nn.Module, loader: DataLoader, config) -> float:
    opt = build_optimizer(model, config.training)
    sched = build_scheduler(opt, config.training, steps_per_epoch=len(loader), monitor_mode=config.monitor[1])
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    start = time.perf_counter()
    for images, target in loader:
        loss = loss_fn(model(images), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return time.perf_counter() - start


def trainer_loop(model: nn.Module, loaders: dict[str, DataLoader], config) -> float:
    opt = build_optimizer(model, config.training)
    sched = build_scheduler(opt, config.training, steps_per_epoch=len(loaders["train"]),
                            monitor_mode=config.monitor[1])
    trainer = TrainingLoop(nets=Networks(model), task=Classification([str(i) for i in range(10)]),
                           loss_fn=nn.CrossEntropyLoss(),
                           optimization=Optimization(opt, sched, step_scheduler_per_batch=True,
                                                     scaler=torch.amp.GradScaler("cpu", enabled=False)),
                           loaders=Loaders(loaders), device=torch.device("cpu"), epochs=1, monitor=("val/loss", "min"),
                           callbacks=[EarlyStopping(patience=None, min_delta=0),
                                      Console(RecordingReporter(), progress_bar=False)])
    start = time.perf_counter()
    trainer.train_epoch()  # the training loop alone (validation is not part of the comparison)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet10t")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    info = machine()  # before the runs: the load average it records is the machine's, not this benchmark's
    n = args.steps * args.batch_size
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, args.image_size, args.image_size, generator=gen)
    y = torch.randint(0, 10, (n,), generator=gen)
    config = validate_config({"data": {"root": "unused", "batch_size": args.batch_size},
                              "training": {"epochs": 1, "progress_bar": False}})
    data = TensorSet(x, y)
    sampler = EpochSampler(n, seed=0, shuffle=True)
    minimal = DataLoader(data, batch_size=args.batch_size, sampler=[i for i, _ in sampler])
    loaders = {"train": DataLoader(data, batch_size=args.batch_size, sampler=EpochSampler(n, seed=0, shuffle=True))}
    times: dict[str, list[float]] = {"minimal loop": [], "plantpheno Trainer": []}
    minimal_loop(make_model(args.backbone), minimal, config)  # warm-up (allocator, oneDNN kernels)
    for _ in range(args.repeats):
        times["minimal loop"].append(minimal_loop(make_model(args.backbone), minimal, config))
        times["plantpheno Trainer"].append(trainer_loop(make_model(args.backbone), loaders, config))
    med = {k: statistics.median(v) for k, v in times.items()}
    fastest = {k: min(v) for k, v in times.items()}
    ratio = med["plantpheno Trainer"] / med["minimal loop"]
    # each repeat runs the two loops back to back: their ratio cancels the machine's slow drift
    paired = [t / m for t, m in zip(times["plantpheno Trainer"], times["minimal loop"], strict=True)]
    lines = [f"# Trainer overhead ({args.backbone}, {args.image_size} px, batch {args.batch_size}, {args.steps} steps, "
             f"{torch.get_num_threads()} threads, {args.repeats} interleaved repeats)", "",
             f"Machine: {describe(info)}", "",
             "| loop | median s | ms/step | ratio of medians | fastest s | ratio of fastest |", "|---|---|---|---|---|---|"]
    for name, t in med.items():
        lines.append(f"| {name} | {t:.3f} | {1000 * t / args.steps:.1f} | {t / med['minimal loop']:.3f}x | "
                     f"{fastest[name]:.3f} | {fastest[name] / fastest['minimal loop']:.3f}x |")
    lines += ["", (f"Per repeat (Trainer / minimal loop, run back to back): {', '.join(f'{r:.3f}x' for r in paired)}; "
                   f"median {statistics.median(paired):.3f}x. Spread of the minimal loop alone: "
                   f"{min(times['minimal loop']):.2f}-{max(times['minimal loop']):.2f} s.")]
    text = "\n".join(lines)
    print(text)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "trainer_overhead.md").write_text(text + "\n")
    (out / "trainer_overhead.json").write_text(json.dumps({"machine": info, "args": vars(args), "seconds": times, "median": med,
                                                           "fastest": fastest, "paired_ratios": paired,
                                                           "ratio": ratio}, indent=2) + "\n")


if __name__ == "__main__":
    main()
