"""The feature cache's two passes on CPU: the frozen prefix over the images, and the blocks after the cut over the
cached activations (the head phase's pooled features), by batch size and by the memory format of the input.

    python benchmarks/backbone_pass.py
    python benchmarks/backbone_pass.py --batches 8 16 32 64 --rounds 3
    python benchmarks/backbone_pass.py --bf16-batches          # no bfloat16 rows

The recipe classify runs bundled EfficientNet-Lite0's frozen part once over the
train and val images at 224 px (its "backbone pass") and caches the activations where the fine-tuned blocks begin
(112 x 14 x 14 with the shipped two blocks, 192 x 7 x 7 with one; ``--blocks`` defaults to the shipped config's);
the head phase then maps them through the blocks after the cut to pooled features. Both run in
eval mode without gradients, on a channels_last network. This script times, on random inputs (speed does not
depend on pixel values), each batch size for the prefix and for the mapping, the mapping's input in both memory
formats (the cache stores plain contiguous tensors), with the variants interleaved over ``--rounds`` rounds (load
drifts alike), and reports milliseconds per image and the ratio to the setting the pipeline used before this
benchmark (prefix batch 64; mapping batch 128 on contiguous input). The ``--bf16-batches`` rows run the prefix
under ``torch.autocast("cpu", torch.bfloat16)`` (fast only on CPUs with AVX512-BF16 or AMX, named in the machine
line), with how far its activations are from float32's (relative L2 error on one batch): a speed figure only,
the recipe caches float32 activations and what bfloat16 would do to its accuracy is not measured here.
Writes benchmarks/results/backbone_pass.{json,md} with the machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import describe, machine, shipped_fine_tune_blocks  # benchmarks/ is not a package; records the machine

NUM_CLASSES = 15


def build(image_size: int, blocks: int) -> dict[str, Any]:
    from plantpheno.config import ModelConfig
    from plantpheno.models import build_model, freeze_backbone, to_channels_last
    from plantpheno.training.fine_tune import CutSuffix, Prefix, fine_tune_cut

    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="tf_efficientnet_lite0", pretrained="bundled", freeze_backbone=True),
                        num_outputs=NUM_CLASSES)
    freeze_backbone(model)
    to_channels_last(model)
    model.eval()
    trunk, cut = fine_tune_cut(model, blocks, image_size)
    return {"prefix": Prefix(trunk[:cut]), "suffix": CutSuffix(model, trunk[cut:]).eval(), "model": model}


def autocast_bf16(fn):
    """``fn`` run under CPU bfloat16 autocast (a timing variant of the prefix)."""
    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return fn(x)
    return run


@torch.no_grad()
def per_image(fn, x: torch.Tensor, repeats: int) -> float:
    fn(x)  # warm-up: oneDNN primitives for this shape
    start = time.perf_counter()
    for _ in range(repeats):
        fn(x)
    return (time.perf_counter() - start) / repeats / len(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--blocks", type=int, default=shipped_fine_tune_blocks(),
                        help="blocks fine-tuned (default: the shipped recipe's)")
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--map-batches", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--bf16-batches", type=int, nargs="*", default=[16],
                        help="prefix batch sizes also timed under CPU bfloat16 autocast (none: leave it out)")
    parser.add_argument("--images", type=int, default=128, help="images timed per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "backbone_pass")
    args = parser.parse_args()
    info = machine()
    b = build(args.image_size, args.blocks)
    model = b["model"]
    with torch.no_grad():
        probe = b["prefix"](torch.rand(1, 3, args.image_size, args.image_size).contiguous(
            memory_format=torch.channels_last))
    act_shape = tuple(probe.shape[1:])

    def pooled(a: torch.Tensor) -> torch.Tensor:
        return model.forward_head(b["suffix"].forward_trunk(a), pre_logits=True)

    settings: dict[str, tuple[Any, torch.Tensor]] = {}
    for n in args.batches:
        images = (torch.rand(n, 3, args.image_size, args.image_size) * 2 - 1).contiguous(
            memory_format=torch.channels_last)
        settings[f"prefix batch {n}"] = (b["prefix"], images)
    bf16_error: dict[str, float] = {}
    for n in args.bf16_batches:
        images = (torch.rand(n, 3, args.image_size, args.image_size) * 2 - 1).contiguous(
            memory_format=torch.channels_last)
        name = f"prefix batch {n}, bf16 autocast"
        settings[name] = (autocast_bf16(b["prefix"]), images)
        with torch.no_grad():
            exact, rounded = b["prefix"](images), autocast_bf16(b["prefix"])(images).float()
        bf16_error[name] = float((rounded - exact).norm() / exact.norm())
    for n in args.map_batches:
        acts = torch.rand(n, *act_shape)
        settings[f"mapping batch {n}, contiguous input"] = (pooled, acts.contiguous())
        settings[f"mapping batch {n}, channels_last input"] = (pooled, acts.contiguous(memory_format=torch.channels_last))
    times: dict[str, list[float]] = {name: [] for name in settings}
    for _ in range(args.rounds):
        for name, (fn, x) in settings.items():
            times[name].append(per_image(fn, x, max(1, args.images // len(x))))
    medians = {name: statistics.median(v) for name, v in times.items()}
    base_prefix = medians.get("prefix batch 64") or medians[f"prefix batch {args.batches[-1]}"]
    base_map = medians.get("mapping batch 128, contiguous input") or next(
        v for k, v in medians.items() if k.startswith("mapping"))
    rows = [{"setting": name, "ms_per_image": 1000 * m, "rounds_ms": [1000 * t for t in times[name]],
             "vs_before": (base_prefix if name.startswith("prefix") else base_map) / m} for name, m in medians.items()]
    lines = [f"# Feature-cache passes on CPU: Lite0 at {args.image_size} px, cut before the last {args.blocks} blocks",
             "", f"Machine: {describe(info)}", "",
             (f"Cached activation per image: {list(act_shape)}. Median of {args.rounds} interleaved rounds; "
              "'vs before' is the speed against the pipeline's setting before this benchmark (prefix batch 64; "
              "mapping batch 128 on contiguous input)."), "",
             "| pass | ms/image | vs before |", "|---|---|---|"]
    lines += [f"| {r['setting']} | {r['ms_per_image']:.2f} | {r['vs_before']:.2f}x |" for r in rows]
    if bf16_error:
        lines += [""] + [f"- {name}: activations {err:.2%} from float32's (relative L2 error)"
                         for name, err in bf16_error.items()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps({"machine": info, "image_size": args.image_size,
                                                         "blocks": args.blocks, "activation": list(act_shape),
                                                         "rounds": args.rounds, "rows": rows,
                                                         "bf16_relative_error": bf16_error}, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
