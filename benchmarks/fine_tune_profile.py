"""Where a fine-tune epoch on cached activations spends its time, and what it costs against the backbone pass.

    python benchmarks/fine_tune_profile.py                      # the shipped recipe's cut (Lite0, its blocks)
    python benchmarks/fine_tune_profile.py --steps 3 --rounds 1 # a quick look
    python benchmarks/fine_tune_profile.py --variants threads=1 contiguous batch=64 compile fused loop blocks=1 bf16

The recipe classify runs the frozen part of bundled EfficientNet-Lite0 once per
image and caches its output where the unfrozen blocks begin; each fine-tune epoch then trains only the blocks
after that cut. With ``training.fine_tune.blocks: 2`` (shipped) that is blocks.5, blocks.6, conv_head + bn2 and
the head, on 112 x 14 x 14 per image at 224 px; with 1, blocks.6 onwards, on 192 x 7 x 7. ``--blocks`` defaults to
the shipped config's. This script
builds exactly that (plantpheno.training.fine_tune: the cut, CutSuffix in train mode with frozen BatchNorm
statistics, AdamW over the unfrozen parameters), feeds it activations of the prefix and reports:

1. cost ratio: one training step's time per image (forward + backward + AdamW) and one evaluation forward per
   image, against the prefix forward per image (the backbone pass the cache saves each epoch);
2. op shares: torch.profiler self CPU time per kind of op (pointwise/depthwise convolution forward and backward,
   BatchNorm forward and backward, activations, padding copies, optimizer, the rest);
3. per module: forward + backward time of each module after the cut, timed alone on its own input;
4. variants (img/s of the training step, median over ``--rounds`` interleaved rounds, against the shipped setting):
   threads=N, contiguous (no channels_last), batch=N, compile (torch.compile, inductor on CPU: its compile time is
   reported apart), fused (AdamW(fused=True)), loop (AdamW(foreach=False), torch's per-parameter CPU default;
   the shipped setting is AdamW(foreach=True), what plantpheno's build_optimizer asks for), blocks=N (another cut),
   bf16 (forward and backward under ``torch.autocast("cpu", torch.bfloat16)``: fast only where the CPU has
   AVX512-BF16 or AMX, recorded in the machine line; a speed figure only, its accuracy is not measured here).

Timings are of this machine (recorded in the results) and of its load at the time: compare figures of one run.
Writes benchmarks/results/fine_tune_profile.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import describe, machine, shipped_fine_tune_blocks  # benchmarks/ is not a package; records the machine

NUM_CLASSES = 15  # the PlantVillage subset's


class Setting:
    """One way to run the fine-tune step: model, cut, memory format, batch, optimizer options, compile."""

    def __init__(self, *, image_size: int, batch: int, blocks: int, channels_last: bool = True,
                 opt: dict[str, Any] | None = None, compile: bool = False, threads: int | None = None,
                 bf16: bool = False) -> None:
        self.image_size, self.batch, self.blocks, self.channels_last = image_size, batch, blocks, channels_last
        self.bf16 = bf16  # forward and backward under torch.autocast("cpu", bfloat16); AMX/AVX512-BF16 run it natively
        # the shipped optimizer: plantpheno's build_optimizer asks for the multi-tensor (foreach) AdamW update
        self.opt = opt if opt is not None else {"foreach": True}
        self.compile, self.threads = compile, threads

    def build(self) -> dict[str, Any]:
        from plantpheno.config import ModelConfig
        from plantpheno.models import build_model, freeze_backbone, to_channels_last
        from plantpheno.training.fine_tune import CutSuffix, Prefix, fine_tune_cut, unfreeze_last

        torch.manual_seed(0)
        model = build_model(ModelConfig(backbone="tf_efficientnet_lite0", pretrained="bundled", freeze_backbone=True),
                            num_outputs=NUM_CLASSES)
        freeze_backbone(model)
        if self.channels_last:
            to_channels_last(model)
        trunk, cut = fine_tune_cut(model, self.blocks, self.image_size)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        images = torch.rand(self.batch, 3, self.image_size, self.image_size).contiguous(memory_format=fmt) * 2 - 1
        prefix = Prefix(trunk[:cut])
        model.eval()
        with torch.no_grad():
            acts = prefix(images)
        unfreeze_last(model, self.blocks)
        suffix = CutSuffix(model, trunk[cut:])
        suffix.train()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=5e-4, weight_decay=0.05, **self.opt)
        start = time.perf_counter()
        stepped = torch.compile(suffix) if self.compile else suffix
        return {"model": model, "prefix": prefix, "suffix": suffix, "stepped": stepped, "opt": opt, "images": images,
                "acts": acts, "targets": torch.randint(0, NUM_CLASSES, (self.batch,)), "cut": cut, "trunk": trunk,
                "params": sum(p.numel() for p in params), "build_s": time.perf_counter() - start, "bf16": self.bf16}


def _step(b: dict[str, Any]) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=b.get("bf16", False)):
        loss = nn.functional.cross_entropy(b["stepped"](b["acts"]), b["targets"])
    b["opt"].zero_grad(set_to_none=True)
    loss.backward()
    b["opt"].step()


def _timed(fn, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps


def cost_ratio(b: dict[str, Any], batch: int, steps: int) -> dict[str, float]:
    """Seconds per image of the training step, of an evaluation forward of the suffix, and of the prefix."""
    _step(b)  # warm-up: oneDNN primitives, optimizer state
    train = _timed(lambda: _step(b), steps) / batch
    with torch.no_grad():
        b["suffix"].eval()
        b["suffix"](b["acts"])
        evaluate = _timed(lambda: b["suffix"](b["acts"]), steps) / batch
        b["prefix"](b["images"])
        prefix = _timed(lambda: b["prefix"](b["images"]), max(1, steps // 2)) / batch
        b["suffix"].train()
    return {"train_step_s_per_image": train, "eval_forward_s_per_image": evaluate, "prefix_s_per_image": prefix,
            "train_step_over_prefix": train / prefix, "eval_over_prefix": evaluate / prefix}


def _kind(name: str, shapes: list[Any]) -> str:
    """The kind of an aten op, depthwise vs pointwise convolutions told apart by their weight's shape."""
    if name in ("aten::mkldnn_convolution", "aten::convolution_backward", "aten::_convolution"):
        weight = shapes[1] if len(shapes) > 1 and shapes[1] else []
        if name == "aten::convolution_backward":
            weight = shapes[2] if len(shapes) > 2 and shapes[2] else []
        depthwise = len(weight) == 4 and weight[1] == 1 and (weight[2] > 1 or weight[3] > 1)
        kind = "depthwise conv" if depthwise else "pointwise conv"
        return f"{kind} {'backward' if 'backward' in name else 'forward'}"
    if "batch_norm" in name:
        return f"BatchNorm {'backward' if 'backward' in name else 'forward'}"
    if any(a in name for a in ("hardtanh", "clamp", "relu", "silu", "threshold")):
        return f"activation {'backward' if 'backward' in name else 'forward'}"
    if name in ("aten::copy_", "aten::fill_", "aten::constant_pad_nd", "aten::zero_"):
        return "copies, fills and padding"
    if any(k in name for k in ("addmm", "aten::mm", "log_softmax", "nll_loss")):
        return "head and loss"
    return "other"


def op_shares(b: dict[str, Any], steps: int) -> dict[str, float]:
    """Share of self CPU time per kind of op over ``steps`` training steps; the optimizer step counted whole."""
    from torch.profiler import ProfilerActivity, profile

    _step(b)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(steps):
            _step(b)
    events = prof.key_averages(group_by_input_shape=True)
    optimizer = sum(e.cpu_time_total for e in events if e.key.startswith("Optimizer.step"))
    # ops that ran inside the optimizer step are already in its total
    inside = {"aten::lerp_", "aten::addcmul_", "aten::addcdiv_", "aten::sqrt", "aten::mul_", "aten::div_",
              "aten::add_", "aten::_foreach_lerp_", "aten::_foreach_mul_", "aten::_foreach_addcmul_",
              "aten::_foreach_sqrt", "aten::_foreach_div_", "aten::_foreach_add_", "aten::_foreach_addcdiv_",
              "aten::_fused_adamw_"}
    totals: dict[str, float] = defaultdict(float)
    for e in events:
        if e.key.startswith(("Optimizer", "ProfilerStep")) or e.key in inside:
            continue
        totals[_kind(e.key, e.input_shapes)] += e.self_cpu_time_total
    totals["optimizer step (AdamW)"] = optimizer
    whole = sum(totals.values())
    return {k: v / whole for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}


def per_module(b: dict[str, Any], steps: int) -> list[dict[str, Any]]:
    """Forward + backward seconds per image of each module after the cut, each timed alone on its input."""
    model, trunk, cut = b["model"], b["trunk"], b["cut"]
    names = {id(m): n for n, m in model.named_modules()}
    x, rows = b["acts"], []
    for i, module in enumerate(trunk[cut:]):
        inp = x.detach().requires_grad_(i > 0)  # the cached activations need no gradient; later inputs do
        out = module(inp)
        grad = torch.randn_like(out)

        def once(m: nn.Module = module, t: torch.Tensor = inp, g: torch.Tensor = grad) -> None:
            m(t).backward(g)

        once()
        seconds = _timed(once, steps) / len(x)
        rows.append({"module": names.get(id(module), type(module).__name__), "type": type(module).__name__,
                     "input": list(inp.shape[1:]), "output": list(out.shape[1:]), "s_per_image": seconds})
        with torch.no_grad():
            x = module(x)
    total = sum(r["s_per_image"] for r in rows)
    for r in rows:
        r["share"] = r["s_per_image"] / total
    return rows


def parse_variant(text: str, base: dict[str, Any]) -> dict[str, Any]:
    key, _, value = text.partition("=")
    if key == "threads":
        return {**base, "threads": int(value)}
    if key == "batch":
        return {**base, "batch": int(value)}
    if key == "blocks":
        return {**base, "blocks": int(value)}
    if key == "contiguous":
        return {**base, "channels_last": False}
    if key == "compile":
        return {**base, "compile": True}
    if key in ("fused", "foreach"):
        return {**base, "opt": {key: True}}
    if key == "loop":  # torch's per-parameter update, its CPU default
        return {**base, "opt": {"foreach": False}}
    if key == "bf16":  # CPU mixed precision (not in the trainer: plantpheno's mixed_precision is CUDA only)
        return {**base, "bf16": True}
    raise SystemExit(f"unknown variant {text!r}; expected threads=N, batch=N, blocks=N, contiguous, compile, "
                     f"fused, foreach, loop or bf16")


def variant_speeds(variants: list[str], base: dict[str, Any], *, steps: int, rounds: int) -> dict[str, Any]:
    """Training-step img/s of the shipped setting and each variant, rounds interleaved (load drifts alike)."""
    settings = {"shipped": base, **{v: parse_variant(v, base) for v in variants}}
    built = {}
    speeds: dict[str, list[float]] = defaultdict(list)
    default_threads = torch.get_num_threads()
    for _ in range(rounds):
        for name, kwargs in settings.items():
            torch.set_num_threads(kwargs.get("threads") or default_threads)
            if name not in built:
                built[name] = Setting(**kwargs).build()
                tick = time.perf_counter()
                _step(built[name])  # the first step compiles (torch.compile) or warms up
                built[name]["first_step_s"] = time.perf_counter() - tick
            b = built[name]
            speeds[name].append(kwargs["batch"] / _timed(lambda b=b: _step(b), steps))
    torch.set_num_threads(default_threads)
    base_speed = statistics.median(speeds["shipped"])
    return {name: {"images_per_s": statistics.median(v), "rounds": v,
                   "vs_shipped": statistics.median(v) / base_speed, "first_step_s": built[name]["first_step_s"],
                   "setting": {k: v for k, v in settings[name].items() if k != "image_size"}}
            for name, v in speeds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--blocks", type=int, default=shipped_fine_tune_blocks(),
                        help="blocks fine-tuned (default: the shipped recipe's)")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the variants")
    parser.add_argument("--variants", nargs="*", default=["threads=1", "contiguous", "batch=64", "fused", "loop", "blocks=1"])
    parser.add_argument("--out", type=Path, default=HERE / "results" / "fine_tune_profile")
    args = parser.parse_args()
    info = machine()
    base = {"image_size": args.image_size, "batch": args.batch_size, "blocks": args.blocks}
    b = Setting(**base).build()
    ratio = cost_ratio(b, args.batch_size, args.steps)
    shares = op_shares(b, max(2, args.steps // 2))
    modules = per_module(b, args.steps)
    variants = variant_speeds(args.variants, base, steps=args.steps, rounds=args.rounds) if args.variants else {}
    lines = [f"# Fine-tune phase on cached activations: Lite0, last {args.blocks} blocks, {args.image_size} px, "
             f"batch {args.batch_size}", "", f"Machine: {describe(info)}", "",
             f"Trained parameters: {b['params']:,}; cached activation per image: {list(b['acts'].shape[1:])}.", "",
             "## Cost against the backbone pass the cache saves", "",
             f"- training step (forward + backward + AdamW): {1000 * ratio['train_step_s_per_image']:.2f} ms/image = "
             f"{ratio['train_step_over_prefix']:.2f}x the frozen prefix's forward "
             f"({1000 * ratio['prefix_s_per_image']:.2f} ms/image)",
             f"- evaluation forward of the blocks after the cut: {1000 * ratio['eval_forward_s_per_image']:.2f} "
             f"ms/image = {ratio['eval_over_prefix']:.2f}x the prefix", "",
             "## Share of the training step's CPU time by kind of op (torch.profiler, self time)", "",
             "| kind | share |", "|---|---|"]
    lines += [f"| {k} | {100 * v:.1f} % |" for k, v in shares.items()]
    lines += ["", "## Per module after the cut (forward + backward, each alone)", "",
              "| module | input | output | ms/image | share |", "|---|---|---|---|---|"]
    lines += [f"| {r['module']} ({r['type']}) | {r['input']} | {r['output']} | {1000 * r['s_per_image']:.2f} | "
              f"{100 * r['share']:.1f} % |" for r in modules]
    if variants:
        lines += ["", f"## Variants (training step, median of {args.rounds} interleaved rounds)", "",
                  "| variant | images/s | vs shipped | first step s |", "|---|---|---|---|"]
        lines += [f"| {name} | {v['images_per_s']:.1f} | {v['vs_shipped']:.2f}x | {v['first_step_s']:.1f} |"
                  for name, v in variants.items()]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(
        {"machine": info, "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
         "cost": ratio, "op_shares": shares, "modules": modules, "variants": variants}, indent=2) + "\n")


if __name__ == "__main__":
    main()
