"""``plantpheno data synth OUT``: a synthetic demo dataset, drawn procedurally (no download);
``plantpheno data check CONFIG``: the data checks alone; ``plantpheno data suggest RUN`` (:mod:`.suggest_cmd`): what
to label next."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import plantpheno.cli.suggest_cmd as suggest_cmd
from plantpheno.cli.options import integer
from plantpheno.errors import ConfigError

EXIT_FINDINGS = 1  # plantpheno data check: an error-level finding (2 stays "bad config or data source")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="dataset tools")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    _register_synth(data_sub)
    _register_check(data_sub)
    suggest_cmd.register(data_sub)


def _register_synth(data_sub: argparse._SubParsersAction) -> None:
    s = data_sub.add_parser("synth", help="draw a synthetic leaf-disease (or rosette leaf-count) dataset",
                            description="Draw a deterministic synthetic dataset: leaves with class-specific lesions "
                                        "(healthy, leaf_spot, rust, blight) as an image folder, or rosettes "
                                        "with a leaf count as a CSV manifest (path,value,group). The --plant-* "
                                        "options plant known defects (disease kind) for testing the data checks; "
                                        "then a manifest labels.csv (path,label,split) and defects.json (what "
                                        "was planted where) are written too.")
    s.add_argument("out", type=Path, metavar="OUT", help="output folder (must be empty or absent)")
    s.add_argument("--kind", choices=("disease", "rosette", "multispectral"), default="disease",
                   help="multispectral: 4-band 16-bit TIFFs (red, green, blue, nir), stress visible in NIR only; "
                        "stress.csv beside them is a trait (the stressed share of each leaf, %%)")
    s.add_argument("--layout", choices=("one-file", "per-band"), default="one-file",
                   help="multispectral kind: one-file (a 4-band TIFF per image) or per-band (an RGB TIFF and a "
                        "{stem}_NIR.tif beside it, and labels.csv with a nir_path column)")
    s.add_argument("--style", choices=("plain", "field"), default="plain",
                   help="disease kind: plain (lab photos: one leaf on soil, paper or cloth) or field (the same leaves "
                        "among grass, stones and other leaves, with a colour cast, uneven light and some defocus), to "
                        "build a lab -> field shift (use another --seed for the field set)")
    s.add_argument("--per-class", type=integer(1, 100_000), default=40, help="images per class (disease)")
    s.add_argument("--plants", type=integer(1, 100_000), default=40,
                   help="plants (rosette); each photographed --views times")
    s.add_argument("--views", type=integer(1, 1000), default=3, help="views per plant (rosette)")
    s.add_argument("--image-size", type=integer(32, 1024), default=96)
    s.add_argument("--seed", type=integer(0, 2**32 - 1), default=0)
    s.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    s.add_argument("--plant-duplicates", type=int, default=0, metavar="N",
                   help="N training images copied byte for byte into the test split")
    s.add_argument("--plant-near-duplicates", type=int, default=0, metavar="N",
                   help="N training images re-saved (JPEG quality 75, resized by 0.8) into the test split")
    s.add_argument("--plant-conflicts", type=int, default=0, metavar="N",
                   help="N images copied into another class's folder (one picture, two labels)")
    s.add_argument("--plant-flips", type=int, default=0, metavar="N",
                   help="N images drawn as one class and saved (labelled) as another")
    s.add_argument("--plant-background-shortcut", action="store_true",
                   help="give each class its own kind and tint of background (the border predicts the label)")
    s.set_defaults(func=run_synth)


def _register_check(data_sub: argparse._SubParsersAction) -> None:
    c = data_sub.add_parser(
        "check", help="run the data checks (duplicates, leakage, labels, quality, shortcuts)",
        description="Read the data as `plantpheno train` would, run the data checks (the same ones train runs "
                    "first) and print one line per finding: severity, check, what and how many, and the fix. The "
                    "data comes from a config's data section, from overrides alone (data.root=leaves), or from a "
                    "path alone (an image folder, or a CSV manifest). Every finding, with the files involved, goes "
                    "to data_check.json. Exit status: 0 = no error-level finding (clean, or warnings only), 1 = at "
                    "least one error-level finding, 2 = the config or the data source itself is invalid.")
    c.add_argument("config", nargs="?", type=Path, metavar="CONFIG|DATA",
                   help="YAML config file or recipe name (optional), or the data itself: an image folder (root/<class>/<image>) or "
                        "a CSV manifest")
    c.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides, e.g. data.root=leaves")
    c.add_argument("--data-path", type=Path, default=None, metavar="PATH",
                   help="the dataset: an image folder (sets data.root) or a CSV manifest (sets data.manifest), as "
                        "for train; the same as giving it in place of CONFIG")
    c.add_argument("--out", type=Path, default=None,
                   help="where to write the findings (default: OUTPUT_DIR/<experiment>/data_check.json)")
    c.add_argument("--label-errors", action="store_true",
                   help="also look for likely label errors with frozen pretrained features (the same as "
                        "data.checks.label_errors=on; the features are cached for later runs)")
    c.add_argument("--files", type=int, default=3, metavar="N", help="files shown per finding (default 3; 0 = none)")
    c.add_argument("--json", action="store_true", help="print the findings as JSON instead of lines")
    c.add_argument("--list", action="store_true", help="list the check ids (for data.checks.ignore) and exit")
    c.set_defaults(func=run_check)


def run_synth(args: argparse.Namespace) -> int:
    from plantpheno.data.synth import Defects, synthesize_disease, synthesize_rosettes

    defects = Defects(duplicates=args.plant_duplicates, near_duplicates=args.plant_near_duplicates,
                      conflicts=args.plant_conflicts, flips=args.plant_flips,
                      background_shortcut=args.plant_background_shortcut)
    if args.layout != "one-file" and args.kind != "multispectral":
        raise ConfigError(f"--layout {args.layout} works with --kind multispectral only")
    if args.kind == "disease":
        out = synthesize_disease(args.out, per_class=args.per_class, image_size=args.image_size, seed=args.seed,
                                 overwrite=args.overwrite, defects=defects, style=args.style)
        if defects.any():
            print(f"wrote an image-folder dataset with planted defects to {out} (use data.manifest={out}/labels.csv;"
                  f" what was planted: {out}/defects.json)")
        else:
            print(f"wrote an image-folder dataset to {out} (use data.root={out})")
    elif args.kind == "multispectral":
        from plantpheno.data.synth_bands import synthesize_multispectral

        if defects.any():
            raise ConfigError("--plant-* options work with --kind disease only")
        out = synthesize_multispectral(args.out, per_class=args.per_class, image_size=args.image_size,
                                       seed=args.seed, overwrite=args.overwrite, layout=args.layout)
        if args.layout == "per-band":
            print(f"wrote an RGB TIFF and a NIR TIFF per image to {out} (use data.root={out} 'data.bands=[red, "
                  f"green, blue, {{name: nir, pattern: \"{{stem}}_NIR.tif\"}}]', or data.manifest={out}/labels.csv "
                  f"'data.bands=[red, green, blue, {{name: nir, column: nir_path}}]')")
        else:
            print(f"wrote a four-band TIFF dataset to {out} (use data.root={out} "
                  f"'data.bands=[red, green, blue, nir]')")
        print(f"a trait to go with it: {out}/stress.csv (the stressed share of each leaf, %; task=regression "
              f"data.manifest={out}/stress.csv)")
    else:
        if defects.any() or args.style != "plain":
            raise ConfigError("--plant-* and --style options work with --kind disease only")
        out = synthesize_rosettes(args.out, plants=args.plants, views_per_plant=args.views,
                                  image_size=args.image_size, seed=args.seed, overwrite=args.overwrite)
        print(f"wrote a leaf-count dataset; manifest {out} (use data.manifest={out} task=regression)")
    return 0


def _config_or_data(first: Path | None, overrides: list[str],
                    data_path: Path | None) -> tuple[Path | None, list[str], Path | None]:
    """The config file, overrides and data path of ``data check FIRST OVERRIDES...``: FIRST is a YAML config, an
    override (the config is optional), or the data itself (an image folder or a CSV manifest)."""
    if first is not None and "=" in str(first) and not first.exists():
        first, overrides = None, [str(first), *overrides]
    if first is not None and (first.is_dir() or first.suffix.lower() == ".csv"):
        if data_path is not None:
            raise ConfigError(f"the data is given twice: {first} and --data-path {data_path}")
        first, data_path = None, first
    if first is not None and not first.exists():
        from plantpheno.recipes import find_recipe

        if find_recipe(first) is None:
            raise ConfigError(f"{first} does not exist and is not a recipe name: give a config file or recipe, an "
                              f"image folder (root/<class>/<image>), a CSV manifest, or overrides such as "
                              f"data.root=leaves")
    if first is None and data_path is None and not overrides:
        raise ConfigError("give a CONFIG file, an image folder, a CSV manifest or overrides such as "
                          "data.root=leaves (which images to check)")
    return first, overrides, data_path


def run_check(args: argparse.Namespace) -> int:
    if args.list:
        from plantpheno.check_ids import CHECKS

        for check, what in CHECKS.items():
            print(f"{check:<32} {what}")
        return 0
    from plantpheno.config import load_config
    from plantpheno.data.prepared import prepare_data
    from plantpheno.reporting import ConsoleReporter
    from plantpheno.run.folder import data_check_path
    from plantpheno.data.doctor.runner import run_data_checks
    from plantpheno.training.doctor_features import frozen_features

    config_path, given, data_path = _config_or_data(args.config, args.overrides, args.data_path)
    overrides = [*given, *(["data.checks.label_errors=on"] if args.label_errors else [])]
    config = load_config(config_path, overrides, data_path=data_path)
    reporter = ConsoleReporter()
    # every unreadable file becomes a finding, instead of stopping the check at the first list of them
    reading = config.model_copy(update={"data": config.data.model_copy(update={"on_bad_image": "skip"})})
    prepared = prepare_data(reading, reporter=reporter)
    extract = frozen_features(device=config.device, num_workers=config.data.num_workers)
    report = run_data_checks(prepared, config.data, seed=config.seed, output_dir=config.output_dir, extract=extract,
                             reporter=reporter)
    out = args.out or data_check_path(config.output_dir, config.experiment)
    report.write(out)
    if args.json:
        print(json.dumps(report.to_json(), indent=1))  # ASCII: names that are not UTF-8 stay escapes
    else:
        for finding in report.findings:
            print(finding.line())
            for line in finding.file_lines(args.files) if args.files > 0 else []:
                print(line)
        reasons: dict[str, list[str]] = {}
        for check, why in report.skipped.items():
            if why != "classification only":
                reasons.setdefault(why, []).append(check)
        for why, checks in reasons.items():
            print(f"not run: {', '.join(checks)}: {why}", file=sys.stderr)
        print(f"{report.headline()}; all findings with their files: {out}")
    return EXIT_FINDINGS if report.errors else 0
