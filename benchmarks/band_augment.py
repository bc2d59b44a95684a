"""Band images: batched augmentation (``data.augment.batched: true``, data/band_batch_augment.py) against the
per-image path (``batched: false``, data/band_loaders.py), side by side in one invocation.

    python benchmarks/band_augment.py [--bands 4] [--sizes 64 128] [--batch 32] [--repeats 5]

Each repeat augments one batch of standardised float band images (the source square with the 15 % crop margin
the loader gives, as read from the cache) both ways, interleaved, on one thread (as a loader worker runs); file
reading is left out, it is the same for both. The defaults of ``data.augment`` apply (rotation, resized crop,
flips, colour jitter; hue with red, green and blue). Writes benchmarks/results/band_augment.{json,md} with the
machine; the figure is the per-image path's time over the batched path's (median of the repeats).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, machine  # noqa: E402

OUT = Path(__file__).parent / "results"
NAMES = ["red", "green", "blue", "nir", "rededge", "swir", "thermal", "ndvi"]


def run(bands: int, size: int, batch: int, repeats: int) -> dict:
    from plantpheno.config import AugmentConfig
    from plantpheno.data.band_batch_augment import BandBatchAugment, augment_band_batch
    from plantpheno.data.band_loaders import band_train_transform
    from plantpheno.data.bands import BandNorm

    names = NAMES[:bands]
    norm = BandNorm(tuple(names), (0.0,) * bands, (65535.0,) * bands, (3e4,) * bands, (1e4,) * bands)
    augment = AugmentConfig()
    per_image = band_train_transform(size, "crop", augment, names, norm)
    batched = BandBatchAugment(size, augment, "crop", names, norm)
    source = math.ceil(size * 1.15)
    images = torch.randn(batch, bands, source, source, generator=torch.Generator().manual_seed(0))
    seeds = list(range(batch))
    content = np.ones((batch, 2))
    times: dict[str, list[float]] = {"per_image": [], "batched": []}
    for _ in range(repeats + 1):  # the first round warms up and is dropped
        start = time.perf_counter()
        for image, seed in zip(images, seeds):
            torch.manual_seed(seed)
            per_image(image)
        times["per_image"].append(time.perf_counter() - start)
        start = time.perf_counter()
        augment_band_batch(batched, list(images), seeds, content)
        times["batched"].append(time.perf_counter() - start)
    ms = {k: 1000 * statistics.median(v[1:]) / batch for k, v in times.items()}
    return {"bands": bands, "size": size, "source": source, "batch": batch, "repeats": repeats,
            "ms_per_image": ms, "speedup": ms["per_image"] / ms["batched"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bands", type=int, default=4)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [run(args.bands, size, args.batch, args.repeats) for size in args.sizes]
    record = {"machine": machine(), "command": " ".join(sys.argv), "rows": rows}
    OUT.mkdir(exist_ok=True)
    (OUT / "band_augment.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [f"Machine: {describe(record['machine'])}", "",
             "| bands | size (from) | per image, ms an image | batched, ms an image | per image / batched |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['bands']} | {r['size']} ({r['source']}) | {r['ms_per_image']['per_image']:.3f} | "
                     f"{r['ms_per_image']['batched']:.3f} | {r['speedup']:.2f}x |")
    (OUT / "band_augment.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
