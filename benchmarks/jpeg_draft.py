"""Large JPEGs: full decode vs PIL draft mode (DCT scaling), in the image check and in loading for a small input.

    python benchmarks/jpeg_draft.py [--size 4000x3000] [--images 8] [--image-size 224] [--repeats 3]

Writes ``--images`` noisy photos of ``--size`` (quality 90), then times, alternating, per image (median of
``--repeats``): the check pass's decode (full vs 1/8 scale) and ``load_rgb`` for a model input of
``--image-size`` (full vs the reduced scale plantpheno picks). Prints a table and writes
benchmarks/results/jpeg_draft.{json,md} with the machine it ran on (other processes may load the CPU).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kill_points import machine  # noqa: E402

from plantpheno.data.images import check_image, load_rgb, to_rgb  # noqa: E402


def _full_check(path: Path) -> None:
    """What check_image did before draft mode: read, hash, decode fully, convert."""
    data = path.read_bytes()
    hashlib.sha256(data).hexdigest()
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        to_rgb(img)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="4000x3000")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(args.images):
            rng = np.random.default_rng(i)
            # smooth colour fields plus noise: closer to a photo's entropy than pure noise
            base = rng.integers(0, 256, (height // 50 + 1, width // 50 + 1, 3), dtype=np.uint8)
            img = Image.fromarray(base).resize((width, height), Image.BILINEAR)
            noisy = np.asarray(img, dtype=np.int16) + rng.integers(-12, 13, (height, width, 3), dtype=np.int16)
            paths.append(Path(tmp) / f"photo{i}.jpg")
            Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(paths[-1], quality=90)
        timings: dict[str, list[float]] = {k: [] for k in ("check_full", "check_draft", "load_full", "load_draft")}
        for _ in range(args.repeats):
            for name, step in (("check_full", _full_check), ("check_draft", check_image),
                               ("load_full", load_rgb),
                               ("load_draft", lambda p: load_rgb(p, min_side=args.image_size))):
                start = time.perf_counter()
                for path in paths:
                    step(path)
                timings[name].append((time.perf_counter() - start) / len(paths))
        decoded = load_rgb(paths[0], min_side=args.image_size).size
    med = {k: statistics.median(v) for k, v in timings.items()}
    result = {"args": vars(args), "machine": machine(), "seconds_per_image": med,
              "check_speedup": med["check_full"] / med["check_draft"],
              "load_speedup": med["load_full"] / med["load_draft"], "draft_decoded_size": decoded}
    rows = [f"| check pass (decode to validate) | {med['check_full'] * 1e3:.0f} ms | {med['check_draft'] * 1e3:.0f} ms "
            f"| {result['check_speedup']:.1f}x |",
            f"| load for a {args.image_size} px input | {med['load_full'] * 1e3:.0f} ms | "
            f"{med['load_draft'] * 1e3:.0f} ms "
            f"| {result['load_speedup']:.1f}x (decoded at {decoded[0]}x{decoded[1]}) |"]
    table = "\n".join(["| per image | full decode | draft mode | ratio |", "|---|---|---|---|", *rows])
    print(table)
    out = Path(__file__).resolve().parent / "results"
    (out / "jpeg_draft.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "jpeg_draft.md").write_text(f"# Large JPEGs: full decode vs draft mode\n\n`python benchmarks/jpeg_draft.py "
                                       f"--size {args.size} --images {args.images} --image-size {args.image_size}`"
                                       f"\n\nMachine: {result['machine']}\n\n{table}\n")


if __name__ == "__main__":
    main()
