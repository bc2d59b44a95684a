"""Trait recipes on synthetic rosettes (leaf counts 3-12, plainly visible): which recipe, chosen on the validation
split, and how far it beats predicting the mean; and what data.resize does to plants wider than their photo's
square.

    python benchmarks/trait_recipe.py [--plants 80] [--views 3] [--size 128] [--seeds 1] [--skip NAME ...]

Every candidate is the recipe traits (bundled EfficientNet-Lite0, frozen backbone, feature cache,
data.resize: pad) with the overrides listed in its row, at ``--size`` px on images drawn at that size:

(a0) the set-up of issue 15 before the fix: the frozen-feature head with timm's own head initialisation
     (EfficientNet: U(-1, 1) for one output) and the learning rate of the recipe traits_full (5e-4);
(a)  the same with the zero (mean-predictor) head the fix brings;
(b)  head only, learning rate 0.01 (the recipe without its fine-tune phase);
(c)  the recipe: head, then 10 epochs of the last two blocks at 5e-4;
(c1) (c) with one warmup epoch in the fine-tune phase;
(c2) (c) with a fine-tune learning rate of 1e-4;
(d)  (c) plus a second cached view of each training image, augmented with keep_whole (rotation, zoom out, flips).
The recipe is the candidate with the lowest validation MAE at its kept epoch (the test split does not choose).
``--seeds N`` repeats the chosen candidate with seeds 1..N-1 (the seed also draws the split);
``--resize-seeds 0 1 2`` runs (r) with those seeds.

Rows of an earlier run that this run does not redo are kept (``--fresh`` drops them).

(r) head only, on the same rosettes stretched to 2:1 (plants wider than tall, leaf tips at the left and right
edges), with data.resize crop, pad and stretch;
(o) the same on the rosettes placed at a random height in a frame twice as tall (the centre square cuts up to
half of a plant away).

Wall times are on a shared machine (other jobs ran beside it: see the load averages in the results); the CPU
seconds of this process are the steadier figure. Writes benchmarks/results/trait_recipe.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

OUT = Path(__file__).parent / "results"

CANDIDATES: dict[str, tuple[str, list[str]]] = {
    "a0": ("before the fix: timm's head init, lr 5e-4, head only", ["training.learning_rate=0.0005",
                                                                     "training.fine_tune.epochs=0"]),
    "a": ("zero head, lr 5e-4, head only", ["training.learning_rate=0.0005", "training.fine_tune.epochs=0"]),
    "b": ("head only, lr 0.01", ["training.fine_tune.epochs=0"]),
    "c": ("head + 10 fine-tune epochs of 2 blocks at 5e-4", []),
    "c1": ("(c) + 1 warmup epoch in the fine-tune phase", ["training.fine_tune.warmup_epochs=1"]),
    "c2": ("(c) with fine-tune learning rate 1e-4", ["training.fine_tune.learning_rate=0.0001"]),
    "d": ("(c) + a second cached view, keep_whole augmentation",
          ["data.augment.enabled=true", "data.augment.keep_whole=true", "data.augment.rotation=180",
           "data.augment.crop_scale=[0.7,1.0]", "data.augment.color_jitter=0", "data.augment.hue=0",
           "training.feature_cache_views=2"]),
}


def machine() -> dict[str, Any]:
    cpu, flags = platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return {"cpu": cpu, "isa": isa, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version()}


def rosettes(folder: Path, *, plants: int, views: int, size: int) -> Path:
    from plantpheno.data.synth import synthesize_rosettes

    return synthesize_rosettes(folder, plants=plants, views_per_plant=views, image_size=size, seed=0)


def stretched(manifest: Path, folder: Path) -> Path:
    """The same rosettes stretched to twice their width (plants wider than tall)."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    lines = manifest.read_text().splitlines()
    for line in lines[1:]:
        rel = line.split(",")[0]
        image = Image.open(manifest.parent / rel)
        image.resize((image.width * 2, image.height), Image.Resampling.BICUBIC).save(folder / rel, quality=92)
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder / "labels.csv"


def shifted(manifest: Path, folder: Path) -> Path:
    """The same rosettes in a frame twice as tall, at a random height each (plants not centred in tall photos):
    the centre square cuts up to half of a plant away."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    lines = manifest.read_text().splitlines()
    rng = np.random.default_rng(0)
    for line in lines[1:]:
        rel = line.split(",")[0]
        image = np.asarray(Image.open(manifest.parent / rel).convert("RGB"))
        side = image.shape[0]
        edge = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]]).mean(axis=0)
        frame = np.empty((2 * side, side, 3), np.uint8)
        frame[:] = edge.round().astype(np.uint8)  # the pot rim's dark border colour
        top = int(rng.integers(0, side + 1))
        frame[top:top + side] = image
        Image.fromarray(frame).save(folder / rel, quality=92)
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder / "labels.csv"


def run(manifest: Path, out: Path, name: str, overrides: list[str], *, size: int, seed: int,
        timm_head: bool = False) -> dict[str, Any]:
    from plantpheno import models
    from plantpheno.config import load_config
    from plantpheno.pipeline import train
    from plantpheno.reporting import RecordingReporter

    config = load_config("traits",
                         [f"data.manifest={manifest}", f"data.image_size={size}", f"output_dir={out}",
                          f"run_name={name}-s{seed}", f"seed={seed}", "training.progress_bar=false",
                          "tracking.system_metrics_interval=0", *overrides])
    real_zero_head = models.zero_head
    if timm_head:
        models.zero_head = lambda model: None  # the head timm initialises, as before the fix
    cpu0, wall0, load0 = _cpu_seconds(), time.perf_counter(), os.getloadavg()[0]
    try:
        result = train(config, reporter=RecordingReporter())
    finally:
        models.zero_head = real_zero_head
    wall, cpu = time.perf_counter() - wall0, _cpu_seconds() - cpu0
    m = result.metrics
    log = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    kept = next(r for r in log if r["epoch"] == result.state.best_epoch)
    # the head phase may stop early: the fine-tune phase begins where the final state says
    start = result.state.phase_start if result.state.phase == "fine_tune" else result.state.epoch
    head_end = next(r for r in log if r["epoch"] == start)
    fine = [r for r in log if r["epoch"] > start]
    return {"seed": seed, "overrides": overrides, "wall_s": wall, "cpu_s": cpu,
            "load_avg_1min": [load0, os.getloadavg()[0]], "epochs": result.state.epoch,
            "best_epoch": result.state.best_epoch, "val_mae_kept": kept["val/mae"],
            "test": {k: m.get(k) for k in ("mae", "rmse", "r2", "dic", "abs_dic", "count_accuracy",
                                           "count_within_one", "num_images")},
            "test_mae_ci": [m["confidence_interval"]["low"], m["confidence_interval"]["high"]],
            "baseline_mae": m["baseline"]["mae"],
            "train_loss_last_head_epoch": head_end["train/loss"],
            "train_loss_first_fine_tune_epoch": fine[0]["train/loss"] if fine else None}


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _machine_text(m: dict[str, Any]) -> str:
    return (f"{m['cpu']} ({', '.join(m['isa']) or 'no AVX2'}), {m['cores']} cores, {m['torch_threads']} torch "
            f"threads, torch {m['torch']}, Python {m['python']}, GPU {m['gpu'] or 'none'}")


def markdown(results: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [f"# Trait recipes on synthetic rosettes ({meta['data']})", "",
             f"Machine: {_machine_text(meta['machine'])}. {meta['note']}", "",
             "| | candidate | seed | val MAE (kept epoch) | test MAE (95% CI) | RMSE | R² | exact | within one | "
             "mean-predictor MAE | train loss: last head epoch -> first fine-tune epoch | wall s | CPU s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, r in results.items():
        t = r["test"]
        jump = (f"{r['train_loss_last_head_epoch']:.4f} -> {r['train_loss_first_fine_tune_epoch']:.4f}"
                if r["train_loss_first_fine_tune_epoch"] is not None else "-")
        exact = f"{t['count_accuracy']:.1%}" if t.get("count_accuracy") is not None else "-"
        within = f"{t['count_within_one']:.1%}" if t.get("count_within_one") is not None else "-"
        chosen = " **chosen**" if key == meta.get("chosen") else ""
        lines.append(f"| {key.split('@')[0]}{chosen} | {r['label']} | {r['seed']} | {r['val_mae_kept']:.3f} | "
                     f"{t['mae']:.3f} ({r['test_mae_ci'][0]:.3f}-{r['test_mae_ci'][1]:.3f}) | {t['rmse']:.3f} | "
                     f"{t['r2']:.3f} | {exact} | {within} | {r['baseline_mae']:.3f} | {jump} | {r['wall_s']:.0f} | "
                     f"{r['cpu_s']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plants", type=int, default=80)
    parser.add_argument("--views", type=int, default=3)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--resize-seeds", type=int, nargs="*", default=[0], help="seeds of the (r) runs")
    parser.add_argument("--skip", nargs="*", default=[], choices=[*CANDIDATES, "r", "o"])
    parser.add_argument("--fresh", action="store_true", help="drop the rows of earlier runs (default: keep the "
                        "rows this run does not redo)")
    args = parser.parse_args()
    earlier = OUT / "trait_recipe.json"
    results: dict[str, Any] = ({} if args.fresh or not earlier.is_file()
                               else json.loads(earlier.read_text())["results"])
    meta: dict[str, Any] = {
        "data": f"{args.plants} plants x {args.views} views, {args.size} px, counts 3-12, split by plant",
        "machine": machine(), "started": time.strftime("%Y-%m-%d %H:%M"),
        "note": "Other agents' jobs shared the 2 CPU cores (load averages per row in the JSON): wall times are "
                "indicative only."}

    def save() -> None:
        OUT.mkdir(exist_ok=True)
        (OUT / "trait_recipe.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
        (OUT / "trait_recipe.md").write_text(markdown(results, meta))

    with tempfile.TemporaryDirectory() as tmp:
        manifest = rosettes(Path(tmp) / "rosettes", plants=args.plants, views=args.views, size=args.size)
        for key, (label, overrides) in CANDIDATES.items():
            if key in args.skip:
                continue
            results[key] = {"label": label, **run(manifest, Path(tmp) / "runs", key, overrides, size=args.size,
                                                  seed=0, timm_head=key == "a0")}
            print(key, json.dumps(results[key]["test"]), "val", results[key]["val_mae_kept"], flush=True)
            save()
        chosen = min((k for k in CANDIDATES if k in results and k != "a0"),
                     key=lambda k: results[k]["val_mae_kept"], default=None)
        meta["chosen"] = chosen
        for seed in range(1, args.seeds):
            if chosen is None:
                break
            label, overrides = CANDIDATES[chosen]
            results[f"{chosen}@{seed}"] = {"label": label, **run(manifest, Path(tmp) / "runs", chosen, overrides,
                                                                 size=args.size, seed=seed)}
            save()
        variants = {"r": (stretched, "2:1 stretched rosettes"), "o": (shifted, "rosettes at random heights in a 1:2 "
                                                                               "tall frame")}
        for name, (make, what) in variants.items():
            if name in args.skip:
                continue
            altered = make(manifest, Path(tmp) / name)
            for seed in args.resize_seeds:
                for resize in ("crop", "pad", "stretch"):
                    key = f"{name}-{resize}" + (f"@{seed}" if seed else "")
                    results[key] = {"label": f"{what}, head only, data.resize={resize}",
                                    **run(altered, Path(tmp) / "runs", f"{name}-{resize}",
                                          ["training.fine_tune.epochs=0", f"data.resize={resize}"],
                                          size=args.size, seed=seed)}
                    save()
    meta["finished"] = time.strftime("%Y-%m-%d %H:%M")
    save()
    print(markdown(results, meta))


if __name__ == "__main__":
    main()
