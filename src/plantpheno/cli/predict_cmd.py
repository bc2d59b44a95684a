"""``plantpheno predict MODEL IMAGES_OR_FOLDER ... [--out preds.csv]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from plantpheno.files.atomic import atomic_write_text
import plantpheno.cli.models_cmd as models_cmd
from plantpheno.cli.options import integer


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predict classes or trait values for images with a registered or trained model",
                       description="Predict with NAME, NAME@alias, NAME/VERSION (from the registry), a model "
                                   "package folder, or a run directory. Writes path, predicted class, confidence "
                                   "and per-class probabilities (or the trait value) per image, and for models "
                                   "with an OOD detector its ood_score and an unknown flag; unreadable files are "
                                   "listed, not fatal.")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGES_OR_FOLDER")
    p.add_argument("--out", type=Path, default=None, help="CSV file (default: standard output)")
    p.add_argument("--batch-size", type=integer(1, 65536), default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--unknown-label", action="store_true",
                   help="write 'unknown' as the class of images the model's OOD detector flags (the ood_score and "
                        "unknown columns are written either way, for models that have a detector)")
    p.add_argument("--registry", default=None, metavar="URI", help=models_cmd.REGISTRY_HELP.split("; for `")[0])
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys
    from contextlib import ExitStack

    from plantpheno.files.atomic import check_output_path
    from plantpheno.registry.model_source import open_model
    from plantpheno.registry.predict import Predictor, collect_images

    listed = collect_images(args.images, arrays=True)  # what a model of data.bands may read too
    if args.out is not None:  # before any work: never replace a link, a FIFO, a device or an image being read
        check_output_path(args.out, inputs=listed, what="--out")
        check_output_path(skipped_path(args.out), inputs=listed, what="--out's list of skipped files")
    with ExitStack() as stack:
        package = open_model(args.model, stack, registry_uri=models_cmd.registry_for(args.model, args.registry))
        predictor = Predictor(package, device=args.device)
        if predictor.ood_note is not None:
            print(f"plantpheno: {predictor.ood_note.replace(str(package.folder), args.model)}", file=sys.stderr)
        # a band model reads .npy/.npz too, and a folder's band files (by pattern) are not images of their own
        paths = collect_images(args.images, bands=predictor.bands)
        results, bad, scores = predictor.predict_files_with_scores(paths, batch_size=args.batch_size,
                                                                   progress=sys.stderr.isatty())
    write_predictions(predictor, results, bad, args.out, scores=scores, unknown_label=args.unknown_label)
    if args.out is not None:
        print(f"wrote {len(results)} prediction(s) to {args.out}", file=sys.stderr)
    return 0


def write_predictions(predictor, results, bad, out: Path | None, *, scores=None, unknown_label: bool = False) -> None:
    """The CSV to ``out`` (atomically) or stdout; unreadable files listed on stderr (and beside ``out``)."""
    from plantpheno.files.csvfile import write_csv

    text = predictor.to_csv(results, scores, unknown_label=unknown_label)
    if out is None:  # file names that are not UTF-8 go out as the bytes they are, as `ls` prints them
        sys.stdout.flush()
        sys.stdout.buffer.write(text.encode("utf-8", "surrogateescape"))
        sys.stdout.buffer.flush()
    else:
        atomic_write_text(out, text)
    if bad:
        print(f"plantpheno: skipped {len(bad)} unreadable file(s):", file=sys.stderr)
        for path, why in bad:
            print(f"  {path}: {why}", file=sys.stderr)
        if out is not None:
            write_csv(skipped_path(out), [("path", "problem"), *((str(p), w) for p, w in bad)])


def skipped_path(out: Path) -> Path:
    """Where ``predict --out OUT`` lists the files it could not read: ``OUT.skipped.csv`` beside it."""
    return out.with_name(out.stem + ".skipped.csv")
