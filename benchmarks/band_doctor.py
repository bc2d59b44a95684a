"""How often does the data doctor's band-shift check (``bands.shift``) fire where there is no shift, and how often
where one is planted?

    python benchmarks/band_doctor.py [--splits 200] [--per-class 120] [--size 48] [--plantvillage PATH]

Each image is measured once, as the image check measures it (``check_band_file``: per-band mean, spread,
percentiles). Then ``--splits`` random 70/15/15 splits are drawn and the shift check is run on each:

* no shift: the synthetic multispectral set (``plantpheno data synth --kind multispectral``, red, green, blue,
  NIR) and, if present, the PlantVillage subset read as red, green, blue bands. A random split has no shift, so
  every firing is a false positive;
* planted: the same splits with every test image's NIR band scaled by 0.9, 0.8 and 0.7 (a sensor calibration
  drift: the per-image mean scales by the same factor, so the measures are scaled rather than re-read).

Writes benchmarks/results/band_doctor.{json,md} with the machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, machine  # noqa: E402

OUT = Path(__file__).parent / "results"
DEFAULT_PV = Path(__file__).resolve().parents[2] / "shared" / "data" / "plantvillage-subset"


def measure(paths: list[Path], names: list[str]) -> list:
    from plantpheno.config import load_config
    from plantpheno.data.bands import check_band_file

    bands = load_config(None, {"data.root": "x", "data.bands": names}).data.bands
    checks = [check_band_file(p, bands, max_pixels=None) for p in paths]
    bad = [c for c in checks if c.problem]
    assert not bad, bad[:3]
    return [c.band_stats for c in checks]


def firing_rate(stats: list, splits: int, seed: int, scale: float | None = None) -> tuple[int, list[float]]:
    """How many of ``splits`` random splits the shift check fires on (NIR of the test split scaled by ``scale``)."""
    from plantpheno.data.doctor.bands import shift_findings
    from plantpheno.data.sources import Sample

    rng = np.random.default_rng(seed)
    fired, distances = 0, []
    for _ in range(splits):
        order = rng.permutation(len(stats))
        n_train, n_val = int(0.7 * len(stats)), int(0.15 * len(stats))
        rows = []
        for rank, i in enumerate(order):
            split = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
            m = stats[i]
            if scale is not None and split == "test":
                k = m.names.index("nir")
                m = replace(m, mean=tuple(v * scale if j == k else v for j, v in enumerate(m.mean)))
            rows.append((split, Sample(Path(f"{i}.tif"), "x"), m))
        found = shift_findings(rows)
        fired += bool(found)
        if found:
            distances.append(max(v["ks_distance"] for v in found[0].details["bands"].values()))
    return fired, distances


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--splits", type=int, default=200)
    parser.add_argument("--per-class", type=int, default=120)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--plantvillage", type=Path, default=DEFAULT_PV)
    args = parser.parse_args()
    from plantpheno.data.synth_bands import synthesize_multispectral

    info, rows = machine(), []
    with tempfile.TemporaryDirectory() as tmp:
        data = synthesize_multispectral(Path(tmp) / "ms", per_class=args.per_class, image_size=args.size, seed=0)
        start = time.perf_counter()
        synthetic = measure(sorted(data.rglob("*.tif")), ["red", "green", "blue", "nir"])
        print(f"measured {len(synthetic)} synthetic images in {time.perf_counter() - start:.1f} s", flush=True)
    for scale in (None, 0.9, 0.8, 0.7):
        fired, _ = firing_rate(synthetic, args.splits, seed=1, scale=scale)
        rows.append({"data": f"synthetic multispectral ({len(synthetic)} images)",
                     "planted": f"test NIR x {scale}" if scale else "none", "splits": args.splits, "fired": fired})
        print(json.dumps(rows[-1]), flush=True)
    if args.plantvillage.is_dir():
        paths = sorted(p for p in args.plantvillage.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        start = time.perf_counter()
        pv = measure(paths, ["red", "green", "blue"])
        print(f"measured {len(pv)} PlantVillage images in {time.perf_counter() - start:.1f} s", flush=True)
        fired, _ = firing_rate(pv, args.splits, seed=2)
        rows.append({"data": f"PlantVillage subset as red, green, blue ({len(pv)} images)", "planted": "none",
                     "splits": args.splits, "fired": fired})
        print(json.dumps(rows[-1]), flush=True)
    OUT.mkdir(exist_ok=True)
    (OUT / "band_doctor.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                      "machine": info, "rows": rows}, indent=2) + "\n")
    lines = [f"# band doctor: bands.shift on random splits ({info['measured_at']})", "",
             f"Machine: {describe(info)}", "", f"`python benchmarks/band_doctor.py {' '.join(sys.argv[1:])}`", "",
             "| data | planted shift | random splits | check fired |", "|---|---|---|---|"]
    lines += [f"| {r['data']} | {r['planted']} | {r['splits']} | {r['fired']} ({r['fired'] / r['splits']:.1%}) |"
              for r in rows]
    (OUT / "band_doctor.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
