"""The README's Python example, as a script: train, evaluate, register and predict from Python.

From the repository after `make demo` (it uses the recipe demo and the synthetic leaves in .demo/leaves):

    python examples/python_api.py

Anywhere else, --workdir makes the same synthetic leaves as `make demo` (60 images of 96 px per class; CI runs it
so) and runs in that folder (the recipe comes with the package):

    python examples/python_api.py --workdir /tmp/plantpheno-example

The model must clearly beat its trivial baseline on the test split to be registered without force=True, so the
example trains the demo recipe's 20 epochs on the full demo data: 16 images of 48 px per class for 5 epochs stay at
chance (accuracy 0.3 vs 0.2 for the majority class on 10 test images, measured), and registering refuses them.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def prepare(workdir: Path) -> None:
    """Make ``workdir`` look like the repository after ``make demo`` (its synthetic leaves), and go there."""
    from plantpheno.data.synth import synthesize_disease

    synthesize_disease(workdir / ".demo" / "leaves", per_class=60, image_size=96, seed=0, overwrite=True)
    os.chdir(workdir)


parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--workdir", type=Path, default=None, help="run in this folder, with data made there")
args = parser.parse_args()
if args.workdir is not None:
    prepare(args.workdir.resolve())

# --- the README's example (tests/unit/test_readme.py checks that the two are the same) ---
import plantpheno as pp

# a recipe name or a YAML file (or a dict, or a Config) + overrides; data_path, output_path as `plantpheno train`
config = pp.load_config("demo", {"training.epochs": 20}, data_path=".demo/leaves", output_path="runs")
run = pp.train(config)                              # = plantpheno train; prints progress (verbose=False: quiet)
test = run.metrics()                                # the held-out test split, with a bootstrap interval
print(f"test accuracy {test['accuracy']:.3f}, 95% CI {test['confidence_interval']['low']:.3f}"
      f"-{test['confidence_interval']['high']:.3f}, {len(run.history)} epochs")
print("val accuracy", pp.evaluate(run, split="val")["accuracy"])   # = plantpheno evaluate RUN --split val

version = pp.register_model(run, "leafnet", alias="candidate")     # = plantpheno models register
model = pp.load_model("leafnet@candidate")  # also "leafnet", "leafnet/1", a run directory, a package folder
for p in model.predict(".demo/leaves/rust")[:3]:   # paths, folders, bytes, PIL images, numpy arrays
    print(p.source, p.label, f"{p.confidence:.2f}")
# --- end of the README's example ---
