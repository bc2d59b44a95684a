"""A split's evaluation: one backbone pass for predictions and OOD features against the two passes made before.

Before, the evaluation of a split passed its images through the backbone twice: for the predictions, then for the
pooled features of the OOD detector.

    nice -n 15 python benchmarks/eval_pass.py                       # PlantVillage subset, test split
    nice -n 15 python benchmarks/eval_pass.py --limit 64 --rounds 1 # a smoke run
    nice -n 15 python benchmarks/eval_pass.py --synthetic           # synthetic leaves (no data needed)

The model is the classify recipe's: bundled EfficientNet-Lite0 at 224 px, 15 classes, eval mode, in the memory
format the pipeline gives it on this device. The images are the test split of ``../shared/data/plantvillage-subset``
(``--synthetic``, or when that folder is absent: synthetic leaves of 256 px, said so in the results).

* baseline (the old route, its lower-level functions called directly): ``predict`` over the split's loader (the
  evaluation's batch size, 32), then ``extract_features`` over the same images (the detector's pass, as
  ``training.unknowns.pooled`` ran it: batches of ``pass_batch_size``, the images decoded again);
* new: ``predict(..., features=True)``: one pass that keeps the pooled features (``evaluation/one_pass.py``).

The two run alternately for ``--rounds`` rounds, in the order baseline, new in odd rounds and new, baseline in even
ones (load drifts alike); each figure is the median over the rounds of a route's wall time and of its process CPU
time (all threads; less moved by other jobs on a shared machine than the wall time), and the ratio baseline / new
is the speed-up. The first round's outputs are compared: the largest
absolute difference of the logits and of the pooled features between the routes (float32 rounding only). Writes
benchmarks/results/eval_pass.{json,md} with the machine (CPU model, cores, torch, load average).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import describe, machine  # noqa: E402  (benchmarks/ is not a package)

DATA = HERE.parent.parent / "shared" / "data" / "plantvillage-subset"
IMAGE_SIZE, BATCH, CLASSES = 224, 32, 15


def test_images(synthetic: bool, work: Path, limit: int | None) -> tuple[list[Path], list[int], str]:
    """The test split's paths and class indices, and where they come from."""
    import csv

    if not synthetic and (DATA / "splits.csv").is_file():
        with (DATA / "splits.csv").open(newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r["split"] == "test"]
        names = sorted({r["label"] for r in rows})
        source = f"PlantVillage subset ({DATA.name}), test split"
        paths, labels = [DATA / r["path"] for r in rows], [names.index(r["label"]) for r in rows]
    else:
        from plantpheno.data.synth import synthesize_disease

        why = "--synthetic" if synthetic else f"{DATA} is absent"
        per_class = 80 if limit is None else -(-limit // 4)  # 4 classes
        root = synthesize_disease(work / "leaves", per_class=per_class, image_size=256, seed=0)
        found = sorted(root.rglob("*.png")) + sorted(root.rglob("*.jpg"))
        names = sorted({p.parent.name for p in found})
        source = f"synthetic leaves, 256 px ({why})"
        paths, labels = found, [names.index(p.parent.name) for p in found]
    if limit is not None:
        paths, labels = paths[:limit], labels[:limit]
    return paths, labels, source


def build(device: torch.device) -> torch.nn.Module:
    from plantpheno.config import ModelConfig
    from plantpheno.models import build_model, to_channels_last, wants_channels_last

    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="tf_efficientnet_lite0", pretrained="bundled"), num_outputs=CLASSES)
    if wants_channels_last("auto", device, model):
        to_channels_last(model)
    return model.to(device).eval()


def routes(model: torch.nn.Module, paths: list[Path], labels: list[int], device: torch.device,
           workers: int) -> dict[str, Any]:
    """The two routes as callables returning (logits, features)."""
    from torch.utils.data import DataLoader

    from plantpheno.data.datasets import EpochSampler, ImageDataset
    from plantpheno.data.transforms import eval_transform
    from plantpheno.evaluation.inference import predict
    from plantpheno.models import normalization
    from plantpheno.training.features import extract_features, pass_batch_size
    from plantpheno.training.objectives import Classification

    mean, std = normalization(model)
    task = Classification([f"c{i}" for i in range(CLASSES)])

    def loader() -> DataLoader:  # as the evaluation's test loader: the split in order, the evaluation transform
        dataset = ImageDataset(paths, labels, eval_transform(IMAGE_SIZE, mean, std, "crop"), regression=False,
                               min_side=IMAGE_SIZE)
        return DataLoader(dataset, batch_size=BATCH, num_workers=workers, generator=torch.Generator(),
                          sampler=EpochSampler(len(paths), seed=0, shuffle=False))

    def baseline() -> tuple[np.ndarray, np.ndarray]:
        p = predict(model, loader(), task=task, device=device)
        features = extract_features(model, paths, image_size=IMAGE_SIZE, mean=mean, std=std,
                                    batch_size=pass_batch_size(BATCH, device), device=device, num_workers=workers)
        return p.raw, features.numpy()

    def single() -> tuple[np.ndarray, np.ndarray]:
        p = predict(model, loader(), task=task, device=device, features=True)
        assert p.features is not None, "the model gave no pooled features in its prediction pass"
        return p.raw, p.features

    return {"baseline (two passes)": baseline, "new (one pass)": single}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="only the first N test images")
    parser.add_argument("--workers", type=int, default=0, help="loader workers (0: the main process decodes)")
    parser.add_argument("--synthetic", action="store_true", help="synthetic leaves instead of PlantVillage")
    parser.add_argument("--work", type=Path, default=Path("/tmp/plantpheno-eval-pass"))
    parser.add_argument("--out", type=Path, default=HERE / "results" / "eval_pass.json")
    args = parser.parse_args()

    device = torch.device("cpu")
    info = machine()
    paths, labels, source = test_images(args.synthetic, args.work, args.limit)
    model = build(device)
    timed: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    outputs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    with torch.no_grad():
        model(torch.zeros(2, 3, IMAGE_SIZE, IMAGE_SIZE).contiguous(memory_format=torch.channels_last))  # warm-up
    for round_ in range(args.rounds):
        order = list(routes(model, paths, labels, device, args.workers).items())
        for name, run in order if round_ % 2 == 0 else order[::-1]:
            start, start_cpu = time.perf_counter(), time.process_time()
            found = run()
            timed.setdefault(name, []).append(time.perf_counter() - start)
            cpu.setdefault(name, []).append(time.process_time() - start_cpu)
            outputs.setdefault(name, found)
    names = list(timed)
    (base_logits, base_features), (new_logits, new_features) = (outputs[n] for n in names)
    seconds = {name: statistics.median(timed[name]) for name in names}
    cpu_seconds = {name: statistics.median(cpu[name]) for name in names}
    base, new = seconds.values()
    base_cpu, new_cpu = cpu_seconds.values()
    result = {
        "machine": info, "load_average_after": [round(x, 2) for x in __import__("os").getloadavg()],
        "command": " ".join(["python", *sys.argv]), "data": source, "images": len(paths), "rounds": args.rounds,
        "model": "tf_efficientnet_lite0 (bundled), 224 px, eval mode", "batch_size": BATCH,
        "loader_workers": args.workers, "seconds": {k: [round(v, 2) for v in vs] for k, vs in timed.items()},
        "cpu_seconds": {k: [round(v, 2) for v in vs] for k, vs in cpu.items()},
        "median_seconds": {k: round(v, 2) for k, v in seconds.items()},
        "median_cpu_seconds": {k: round(v, 2) for k, v in cpu_seconds.items()},
        "ratio_baseline_over_new": {"wall": round(base / new, 3), "cpu": round(base_cpu / new_cpu, 3)},
        "max_abs_difference": {"logits": float(np.abs(base_logits - new_logits).max()),
                               "pooled_features": float(np.abs(base_features - new_features).max())},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    rows = [f"| {name} | {seconds[name]:.1f} | {base / seconds[name]:.2f}x | {cpu_seconds[name]:.1f} | "
            f"{1000 * cpu_seconds[name] / len(paths):.1f} | {base_cpu / cpu_seconds[name]:.2f}x |" for name in names]
    diff = result["max_abs_difference"]
    text = (f"# {__doc__.splitlines()[0]}\n\n`{result['command']}` on {describe(info)} (load "
            f"{result['load_average_after'][0]} when done)\n\n{source}: {len(paths)} images, {args.rounds} round(s) "
            f"alternating (medians).\n\n| route | wall s | wall speed-up | CPU s | CPU ms / image | CPU speed-up |\n"
            f"|---|---|---|---|---|---|\n" + "\n".join(rows) + f"\n\nLargest difference between the routes: logits "
            f"{diff['logits']:.2e}, pooled features {diff['pooled_features']:.2e} (float32 rounding: the baseline's "
            f"feature pass runs in batches of {16 if device.type == 'cpu' else 64}, the prediction pass in batches "
            f"of {BATCH}).\n")
    args.out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
