"""The run's OOD detector on another source (synthetic lab -> field leaves).

How much of a shifted source a lab model's detector flags, how well its score tells the source from the in-source
test images, and whether the images it keeps are the ones the model gets right.

    python benchmarks/source_unknowns.py [--quick] [--out benchmarks/results/source_unknowns.json]

A lab model (``test_resnet``, 64 px, plain-background synthetic leaves, the detector fitted on its train/val at the
end of ``train``: energy+knn, keep 95 %) is evaluated with ``plantpheno.evaluate(run, data=FIELD)`` on field-style
synthetic leaves of the same classes (``data synth --style field``, another seed). Every figure comes with its
interval: the flagged share and accuracies with Wilson intervals, AUROC and FPR95 with percentile-bootstrap ones.
Writes the figures and the machine to the JSON and a Markdown table beside it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import describe, machine  # noqa: E402  (benchmarks/ is not a package)


def _config(work: Path, root: Path, epochs: int) -> dict[str, Any]:
    return {"seed": 0, "output_dir": str(work / "runs"), "run_name": "lab", "device": "cpu",
            "data": {"root": str(root), "image_size": 64, "batch_size": 16, "num_workers": 0,
                     "checks": {"enabled": False}},
            "model": {"backbone": "test_resnet"},
            "training": {"epochs": epochs, "learning_rate": 0.01, "progress_bar": False},
            "evaluation": {"bootstrap_samples": 1000, "report": False}, "tracking": {"backends": []}}


def _share(block: dict[str, Any] | None) -> str:
    if not block:
        return "n/a"
    return f"{block['count']}/{block['num_images']} = {block['fraction']:.3f} [{block['low']:.3f}, {block['high']:.3f}]"


def _interval(block: dict[str, Any]) -> str:
    return f"{block['estimate']:.3f} [{block['low']:.3f}, {block['high']:.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "results" / "source_unknowns.json")
    parser.add_argument("--work", type=Path, default=Path("/tmp/plantpheno-source-unknowns"))
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer images and epochs")
    args = parser.parse_args()

    import plantpheno as pp
    from plantpheno.data.synth import synthesize_disease

    shutil.rmtree(args.work, ignore_errors=True)
    per_lab, per_field, epochs = (20, 12, 3) if args.quick else (40, 30, 6)
    lab = synthesize_disease(args.work / "lab", per_class=per_lab, image_size=64, seed=0)
    field = synthesize_disease(args.work / "field", per_class=per_field, image_size=64, seed=1, style="field")
    started = time.perf_counter()
    run = pp.train(_config(args.work, lab, epochs), verbose=False)
    trained = time.perf_counter() - started
    test = run.metrics("test")
    started = time.perf_counter()
    m = pp.evaluate(run, data=field, name="field", verbose=False)
    evaluated = time.perf_counter() - started
    u, drop = m["unknowns"], m["shift"]["drop"]["accuracy"]
    result = {
        "machine": machine(), "command": " ".join(["python", *sys.argv]),
        "setup": {"lab_per_class": per_lab, "field_per_class": per_field, "epochs": epochs, "image_size": 64,
                  "backbone": "test_resnet", "score": u["score"], "keep": u["keep"]},
        "lab_test": {"accuracy": test["accuracy"], "unknowns": test["unknowns"]},
        "field": {"accuracy": m["accuracy"], "confidence_interval": m["confidence_interval"], "drop": drop,
                  "unknowns": u},
        "seconds": {"train": round(trained, 1), "evaluate_field": round(evaluated, 1)},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    sep = u["separation"]
    rows = [("lab test: flagged unknown", _share(test["unknowns"]["flagged"])),
            ("field: accuracy", f"{m['accuracy']:.3f}; drop from lab test {drop['drop']:.3f} "
                                f"[{drop['low']:.3f}, {drop['high']:.3f}]"),
            ("field: flagged unknown", _share(u["flagged"])),
            ("field: accuracy on kept images", _share(u["known_accuracy"])),
            ("field: accuracy on flagged images", _share(u["unknown_accuracy"])),
            (f"AUROC, lab test ({sep['num_in_source']}) vs field ({sep['num_other']})", _interval(sep["auroc"])),
            ("FPR at 95 % TPR", _interval(sep["fpr95"]))]
    table = "\n".join(["| figure | value [95 % interval] |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)])
    text = f"# {__doc__.splitlines()[0]}\n\n`{result['command']}` on {describe(result['machine'])}\n\n{table}\n"
    args.out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
