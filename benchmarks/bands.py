"""Does the NIR band reach the model? RGB-only vs RGB+NIR on synthetic leaves whose stress shows only in NIR
(``plantpheno data synth --kind multispectral``), and the first-layer adapters side by side.

    python benchmarks/bands.py [--per-class 120] [--size 48] [--epochs 6] [--backbone test_resnet]
                               [--adapters] [--adapter-epochs 3]

Part 1, same data, split, seed and recipe, only ``data.bands`` differs:
  (rgb)  data.bands = [red, green, blue]: goal within 10 points of chance (50 %);
  (rgbn) data.bands = [red, green, blue, nir]: goal >= 95 % test accuracy, and NIR first in its band-importance
         table (``band_importance.json``: the validation accuracy lost when each band is replaced by its training
         mean).
The end-to-end comparison of the adapters is benchmarks/adapter.py.
Part 2 (``--adapters``): bundled ImageNet EfficientNet-Lite0 on the four bands with model.input_adapter = mean
(default), tile and random, the backbone frozen (only the head trains, BatchNorm keeps its ImageNet statistics):
how good the features are that each adapted network starts from. Validation loss after each epoch and test
accuracy, same seeds.

Rows of an earlier run that this run does not redo are kept (marked with its date).
Accuracies are on the test split with 95 % bootstrap intervals (the run's own evaluation). Writes
benchmarks/results/bands.{json,md} with the machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, machine  # noqa: E402

OUT = Path(__file__).parent / "results"
RGB, RGBN = ["red", "green", "blue"], ["red", "green", "blue", "nir"]


def train_one(data: Path, out: Path, name: str, bands: list[str], *, size: int, epochs: int, backbone: str,
              extra: dict[str, Any] | None = None) -> dict[str, Any]:
    from plantpheno.config import validate_config
    from plantpheno.pipeline import train
    from plantpheno.reporting import RecordingReporter
    from plantpheno.run.epochlog import read_epoch_log
    from plantpheno.run.folder import RunDir

    raw: dict[str, Any] = {
        "seed": 0, "output_dir": str(out), "run_name": name, "device": "cpu",
        "data": {"root": str(data), "bands": bands, "image_size": size, "batch_size": 32, "num_workers": 0,
                 "checks": {"enabled": False}},
        "model": {"backbone": backbone},
        "training": {"epochs": epochs, "learning_rate": 0.003, "progress_bar": False},
        "evaluation": {"report": False, "bootstrap_samples": 1000},
        "tracking": {"backends": []},
    }
    for section, values in (extra or {}).items():
        raw[section].update(values)
    start = time.perf_counter()
    result = train(validate_config(raw), reporter=RecordingReporter(), handle_signals=False)
    wall = time.perf_counter() - start
    m = result.metrics
    history = read_epoch_log(RunDir.of(result.run_dir).metrics_log).records
    val_loss = [round(float(row["val/loss"]), 4) for row in history if "val/loss" in row]
    ci = m["confidence_interval"]
    found = RunDir.of(result.run_dir).band_importance
    ranked = json.loads(found.read_text()) if found.is_file() else None
    importance = None if ranked is None else {
        "metric": ranked["metric"], "split": ranked["split"], "images": ranked["num_images"],
        "baseline": ranked["baseline"]["estimate"],
        "bands": [{"band": r["band"], "rank": r["rank"], "without": r["value"], "drop": r["drop"]["estimate"],
                   "ci95": [r["drop"]["low"], r["drop"]["high"]]} for r in ranked["bands"]]}
    return {"name": name, "bands": bands, "backbone": backbone, "accuracy": m["accuracy"],
            "ci95": [ci["low"], ci["high"]], "test_images": m.get("num_samples"), "val_loss_per_epoch": val_loss,
            "wall_s": round(wall, 1), "band_importance": importance,
            "adapter": (extra or {}).get("model", {}).get("input_adapter")}


def importance_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The band-importance table of each run that has one (``band_importance.json``: validation split)."""
    lines: list[str] = []
    for r in rows:
        imp = r.get("band_importance")
        if not imp:
            continue
        lines += ["", f"Band importance of run {r['name']}: {imp['metric']} on the {imp['split']} split "
                  f"({imp['images']} images) {imp['baseline']:.1%} with every band; each band replaced by its "
                  f"training mean in turn (paired bootstrap, 95 %).", "",
                  "| rank | band | accuracy without it | drop (95% CI) |", "|---|---|---|---|"]
        for b in imp["bands"]:
            lo, hi = b["ci95"]
            ci = f" ({lo:+.1%} to {hi:+.1%})" if lo is not None else ""
            lines.append(f"| {b['rank']} | {b['band']} | {b['without']:.1%} | {b['drop']:+.1%}{ci} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=120)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--backbone", default="test_resnet")
    parser.add_argument("--adapters", action="store_true", help="also compare the first-layer adapters")
    parser.add_argument("--adapter-epochs", type=int, default=3)
    parser.add_argument("--no-bands", action="store_true", help="skip part 1 (keep its rows of an earlier run)")
    parser.add_argument("--runs", nargs="+", default=["rgb", "rgbn"], choices=["rgb", "rgbn"],
                        help="part 1's runs to do (the others' rows of an earlier run are kept)")
    args = parser.parse_args()
    from plantpheno.data.synth_bands import synthesize_multispectral

    info = machine()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = synthesize_multispectral(Path(tmp) / "set", per_class=args.per_class, image_size=max(args.size, 32),
                                        seed=0)
        for name, bands in () if args.no_bands else [(n, b) for n, b in (("rgb", RGB), ("rgbn", RGBN))
                                                     if n in args.runs]:
            rows.append(train_one(data, Path(tmp) / "runs", name, bands, size=args.size, epochs=args.epochs,
                                  backbone=args.backbone))
            print(json.dumps(rows[-1]), flush=True)
        if args.adapters:
            for adapter in ("mean", "tile", "random"):
                rows.append(train_one(data, Path(tmp) / "runs", f"adapter-{adapter}", RGBN, size=args.size,
                                      epochs=args.adapter_epochs, backbone="tf_efficientnet_lite0",
                                      extra={"model": {"pretrained": "bundled", "input_adapter": adapter,
                                                       "freeze_backbone": True},
                                             "training": {"learning_rate": 0.01}}))
                print(json.dumps(rows[-1]), flush=True)
    OUT.mkdir(exist_ok=True)
    earlier = json.loads((OUT / "bands.json").read_text()) if (OUT / "bands.json").is_file() else {"rows": []}
    redone = {r["name"] for r in rows}
    kept = [{**r, "from_earlier_run": r.get("from_earlier_run") or earlier.get("machine", {}).get("measured_at")}
            for r in earlier["rows"] if r["name"] not in redone]
    rows = kept + rows
    record = {"args": vars(args), "machine": info, "rows": rows}
    (OUT / "bands.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [f"# bands: does NIR reach the model? ({info['measured_at']})", "",
             f"Machine: {describe(info)}", "",
             f"`python benchmarks/bands.py {' '.join(sys.argv[1:])}`: {args.per_class} images per class (healthy, "
             f"stressed; chance 50 %), {args.size} px.", "",
             "| run | bands | backbone | adapter | test accuracy (95% CI) | val loss per epoch | wall s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lo, hi = r["ci95"]
        lines.append(f"| {r['name']} | {', '.join(r['bands'])} | {r['backbone']} | {r['adapter'] or '-'} | "
                     f"{r['accuracy']:.1%} ({lo:.1%} to {hi:.1%}) | {', '.join(map(str, r['val_loss_per_epoch']))} "
                     f"| {r['wall_s']} |")
    lines += importance_lines(rows)
    (OUT / "bands.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
