"""Does batched band augmentation (``data.augment.batched_bands``) train as well as the per-image path?

    python benchmarks/band_augment_accuracy.py --seed 0     # then --seed 1, --seed 2 (one seed per invocation)

On the synthetic multispectral set of ``benchmarks/bands.py`` (120 leaves per class, 48 px, red, green, blue, NIR;
the stress is visible only in NIR), ``test_resnet`` is trained for 8 epochs twice with the same seed (same split,
initialisation and batches): augmented per image (the default) and in whole batches; the default augmentation
settings otherwise. Each invocation adds its seed's two rows to benchmarks/results/band_augment_accuracy.{json,md}
(a seed run again replaces its rows), with the machine.
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


def train_one(data: Path, out: Path, *, seed: int, batched: bool) -> dict[str, Any]:
    from plantpheno.config import validate_config
    from plantpheno.pipeline import train
    from plantpheno.reporting import RecordingReporter

    raw = {"seed": seed, "output_dir": str(out), "run_name": f"s{seed}-{'batched' if batched else 'per-image'}",
           "device": "cpu",
           "data": {"root": str(data), "bands": ["red", "green", "blue", "nir"], "image_size": 48, "batch_size": 32,
                    "num_workers": 0, "checks": {"enabled": False}, "augment": {"batched_bands": batched}},
           "model": {"backbone": "test_resnet"},
           "training": {"epochs": 8, "learning_rate": 0.003, "progress_bar": False},
           "evaluation": {"report": False, "bootstrap_samples": 1000}, "tracking": {"backends": []}}
    start = time.perf_counter()
    m = train(validate_config(raw), reporter=RecordingReporter(), handle_signals=False).metrics
    ci = m["confidence_interval"]
    return {"seed": seed, "augmentation": "batched" if batched else "per image", "accuracy": m["accuracy"],
            "ci95": [ci["low"], ci["high"]], "test_images": m.get("num_samples"),
            "wall_s": round(time.perf_counter() - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from plantpheno.data.synth_bands import synthesize_multispectral

    info = machine()
    with tempfile.TemporaryDirectory() as tmp:
        data = synthesize_multispectral(Path(tmp) / "set", per_class=120, image_size=48, seed=0)
        rows = [train_one(data, Path(tmp) / "runs", seed=args.seed, batched=b) for b in (False, True)]
    for row in rows:
        print(json.dumps(row), flush=True)
    OUT.mkdir(exist_ok=True)
    path = OUT / "band_augment_accuracy.json"
    earlier = json.loads(path.read_text())["rows"] if path.is_file() else []
    rows = sorted([r for r in earlier if r["seed"] != args.seed] + [{**r, "machine": describe(info)} for r in rows],
                  key=lambda r: (r["seed"], r["augmentation"] != "per image"))
    path.write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    lines = ["| seed | augmentation | test accuracy (95% CI) | wall s | machine |", "|---|---|---|---|---|"]
    lines += [f"| {r['seed']} | {r['augmentation']} | {r['accuracy']:.1%} ({r['ci95'][0]:.1%} to {r['ci95'][1]:.1%}) "
              f"| {r['wall_s']} | {r['machine']} |" for r in rows]
    (OUT / "band_augment_accuracy.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
