"""Does the exact-duplicate check of band data (the hash of each image's band values) find what the RGB check finds,
nothing on a set without copies, and every planted copy; and what does the hash cost?

    python benchmarks/band_duplicates.py [--per-class 120] [--size 48] [--copies 20] [--plantvillage PATH]

* the PlantVillage subset (if present), with ``--copies`` photos copied byte for byte and as many saved as PNG (the
  same decoded pixels), is checked both ways in one invocation: as RGB images (``check_image``: the hash of the
  decoded 8-bit pixels, the baseline) and as red, green, blue bands (``check_band_file``); the groups of identical
  pictures must be the same;
* the synthetic multispectral set (``plantpheno data synth --kind multispectral``, red, green, blue, NIR; no
  copies): every group is a false positive;
* the same set with ``--copies`` images copied byte for byte and as many re-encoded (zlib, planar layout), each
  with its NIR value changed in one pixel for as many more (not copies: the NIR differs): every copy must be found,
  no altered one.

The hash's cost is the time to hash each image's band values against the time of the whole band check of that
image (read, measure, hash), on the synthetic set. Writes benchmarks/results/band_duplicates.{json,md} with the
machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, machine  # noqa: E402

OUT = Path(__file__).parent / "results"
DEFAULT_PV = Path(__file__).resolve().parents[2] / "shared" / "data" / "plantvillage-subset"


def band_hashes(paths: list[Path], names: list[str]) -> tuple[dict[Path, str], float]:
    """The band-value hash of every image (as the image check computes it), and the seconds it took."""
    from plantpheno.config import load_config
    from plantpheno.data.bands import check_band_file

    bands = load_config(None, {"data.root": "x", "data.bands": names}).data.bands
    start = time.perf_counter()
    checks = [check_band_file(p, bands, max_pixels=None) for p in paths]
    seconds = time.perf_counter() - start
    bad = [c for c in checks if c.problem]
    assert not bad, bad[:3]
    return {c.path: c.band_stats.pixel_hash for c in checks}, seconds


def rgb_hashes(paths: list[Path]) -> dict[Path, str]:
    from plantpheno.data.images import check_image

    checks = [check_image(p, max_pixels=None) for p in paths]
    return {c.path: c.stats.pixel_hash for c in checks}


def groups(hashes: dict[Path, str]) -> set[frozenset[str]]:
    """The sets of files that share a hash (two or more)."""
    by_hash: dict[str, set[str]] = defaultdict(set)
    for path, digest in hashes.items():
        by_hash[digest].add(str(path))
    return {frozenset(g) for g in by_hash.values() if len(g) > 1}


def hash_seconds(paths: list[Path], names: list[str]) -> float:
    """The time of the hash alone (as band_stats.measure_bands computes it), on arrays read beforehand."""
    from plantpheno.config import load_config
    from plantpheno.data.bands import read_bands

    bands = load_config(None, {"data.root": "x", "data.bands": names}).data.bands
    arrays = [read_bands(p, bands, max_pixels=None) for p in paths]
    start = time.perf_counter()
    for pixels in arrays:
        digest = hashlib.sha256("x".join(map(str, pixels.shape)).encode() + b":")
        digest.update(np.ascontiguousarray(pixels, dtype=np.float32).tobytes())
    return time.perf_counter() - start


def plant(data: Path, copies: int) -> tuple[set[frozenset[str]], set[str]]:
    """Copies of the first ``copies`` images (bytes) and of the next ones (re-encoded), and altered copies of the
    next ones (one NIR pixel changed); the groups that must be found and the altered files that must not."""
    import tifffile

    originals = sorted(data.rglob("*.tif"))
    expected, altered = set(), set()
    for i, src in enumerate(originals[:3 * copies]):
        pixels = tifffile.imread(src)
        dst = src.with_name(f"planted_{i:04d}.tif")
        if i < copies:
            shutil.copyfile(src, dst)
        elif i < 2 * copies:
            tifffile.imwrite(dst, np.ascontiguousarray(pixels.transpose(2, 0, 1)), compression="zlib",
                             photometric="minisblack", planarconfig="separate")
        else:
            pixels = pixels.copy()
            pixels[0, 0, 3] ^= 1
            tifffile.imwrite(dst, pixels, photometric="minisblack", planarconfig="contig")
            altered.add(str(dst))
            continue
        expected.add(frozenset({str(src), str(dst)}))
    return expected, altered


def plant_photos(photos: list[Path], folder: Path, copies: int) -> list[Path]:
    """Byte copies of every 50th photo, then lossless PNG copies (the same decoded pixels) of as many others."""
    from PIL import Image

    made = []
    for i, src in enumerate(photos[::50][:2 * copies]):
        dst = folder / f"planted_{i:04d}{src.suffix if i < copies else '.png'}"
        if i < copies:
            shutil.copyfile(src, dst)
        else:
            with Image.open(src) as image:
                image.convert("RGB").save(dst)
        made.append(dst)
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-class", type=int, default=120)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--copies", type=int, default=20)
    parser.add_argument("--plantvillage", type=Path, default=DEFAULT_PV)
    args = parser.parse_args()
    from plantpheno.data.synth_bands import synthesize_multispectral

    info, rows = machine(), []
    names = ["red", "green", "blue", "nir"]
    with tempfile.TemporaryDirectory() as tmp:
        data = synthesize_multispectral(Path(tmp) / "ms", per_class=args.per_class, image_size=args.size, seed=0)
        paths = sorted(data.rglob("*.tif"))
        hashes, check_s = band_hashes(paths, names)
        hashing_s = hash_seconds(paths, names)
        rows.append({"data": f"synthetic multispectral ({len(paths)} images, {args.size} px)", "planted": "none",
                     "expected": 0, "found": len(groups(hashes)), "false": len(groups(hashes))})
        expected, altered = plant(data, args.copies)
        hashes, _ = band_hashes(sorted(data.rglob("*.tif")), names)
        found = groups(hashes)
        rows.append({"data": f"the same + {args.copies} byte copies, {args.copies} re-encoded (zlib, planar), "
                             f"{args.copies} with one NIR pixel changed", "planted": 2 * args.copies,
                     "expected": len(expected), "found": len(found & expected),
                     "false": len(found - expected), "altered_flagged": len({f for g in found for f in g} & altered)})
        print(json.dumps(rows[-1]), flush=True)
    cost = {"images": len(paths), "band_check_s": check_s, "hash_s": hashing_s, "share": hashing_s / check_s}
    print(json.dumps(cost), flush=True)
    if args.plantvillage.is_dir():
        pv = sorted(p for p in args.plantvillage.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        with tempfile.TemporaryDirectory() as tmp:
            planted = plant_photos(pv, Path(tmp), args.copies)
            as_bands, _ = band_hashes(pv + planted, ["red", "green", "blue"])
            as_rgb = rgb_hashes(pv + planted)
        by_rgb, by_bands = groups(as_rgb), groups(as_bands)
        rows.append({"data": f"PlantVillage subset ({len(pv)} photos) + {args.copies} byte copies and {args.copies} "
                             f"saved as PNG: the groups of the RGB check (baseline)", "planted": 2 * args.copies,
                     "expected": len(by_rgb), "found": len(by_bands & by_rgb), "false": len(by_bands - by_rgb)})
        print(json.dumps(rows[-1]), flush=True)
    OUT.mkdir(exist_ok=True)
    (OUT / "band_duplicates.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                          "machine": info, "rows": rows, "cost": cost},
                                                         indent=2) + "\n")
    lines = [f"# band doctor: exact duplicates by band values ({info['measured_at']})", "",
             f"Machine: {describe(info)}", "", f"`python benchmarks/band_duplicates.py {' '.join(sys.argv[1:])}`", "",
             "| data | planted | groups to find | found | false groups |", "|---|---|---|---|---|"]
    lines += [f"| {r['data']} | {r['planted']} | {r['expected']} | {r['found']} | {r['false']}"
              + (f" ({r['altered_flagged']} altered flagged)" if "altered_flagged" in r else "") + " |" for r in rows]
    lines += ["", f"Hash cost: {cost['hash_s'] * 1000 / cost['images']:.2f} ms per image, "
                  f"{cost['share']:.1%} of the band check's {cost['band_check_s'] * 1000 / cost['images']:.1f} ms "
                  f"(read, measure, hash; {cost['images']} synthetic images)."]
    (OUT / "band_duplicates.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
