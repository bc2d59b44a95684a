"""``plantpheno data synth OUT``: a synthetic demo dataset, drawn procedurally (no download)."""

from __future__ import annotations

import argparse
from pathlib import Path

from plantpheno.cli.options import integer


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="dataset tools")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    s = data_sub.add_parser("synth", help="draw a synthetic leaf-disease (or rosette leaf-count) dataset",
                            description="Draw a deterministic synthetic dataset: leaves with class-specific lesions "
                                        "(healthy, leaf_spot, rust, blight) as an image folder, or rosettes "
                                        "with a leaf count as a CSV manifest (path,value,group).")
    s.add_argument("out", type=Path, metavar="OUT", help="output folder (must be empty or absent)")
    s.add_argument("--kind", choices=("disease", "rosette"), default="disease")
    s.add_argument("--per-class", type=integer(1, 100_000), default=40, help="images per class (disease)")
    s.add_argument("--plants", type=integer(1, 100_000), default=40,
                   help="plants (rosette); each photographed --views times")
    s.add_argument("--views", type=integer(1, 1000), default=3, help="views per plant (rosette)")
    s.add_argument("--image-size", type=integer(32, 1024), default=96)
    s.add_argument("--seed", type=integer(0, 2**32 - 1), default=0)
    s.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    s.set_defaults(func=run_synth)


def run_synth(args: argparse.Namespace) -> int:
    from plantpheno.data.synth import synthesize_disease, synthesize_rosettes

    if args.kind == "disease":
        out = synthesize_disease(args.out, per_class=args.per_class, image_size=args.image_size, seed=args.seed,
                                 overwrite=args.overwrite)
        print(f"wrote an image-folder dataset to {out} (use data.root={out})")
    else:
        out = synthesize_rosettes(args.out, plants=args.plants, views_per_plant=args.views,
                                  image_size=args.image_size, seed=args.seed, overwrite=args.overwrite)
        print(f"wrote a leaf-count dataset; manifest {out} (use data.manifest={out} task=regression)")
    return 0
