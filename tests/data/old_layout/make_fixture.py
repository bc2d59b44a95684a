"""Regenerate the old-layout fixture: a tiny run folder and a tiny model package written by the code as it was
BEFORE model metadata and evaluations became typed records (issue 32, part B), with the predictions that code
made on a few images. tests/unit/test_old_layout.py loads both with today's code and expects the same answers.

Run from the repository root (it overwrites this folder's run/, package/, images/ and expected.json):

    PYTHONPATH=src HF_HUB_OFFLINE=1 python tests/data/old_layout/make_fixture.py

Only regenerate it with a reason: it is meant to hold the files an older plantpheno wrote. To keep the committed
fixture under 1 MB the smallest timm test model is trained for one epoch on 4 x 6 synthetic 32 px leaves, the run's
last.pt and plots are dropped (predict uses best.pt) and the optimizer/scheduler state in best.pt is emptied (predict reads
only the weights and the metadata).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent


def main() -> None:
    from plantpheno.api import load_model
    from plantpheno.config import validate_config
    from plantpheno.data.synth import synthesize_disease
    from plantpheno.pipeline import train
    from plantpheno.registry.package import package_run

    with tempfile.TemporaryDirectory() as tmp:
        root = synthesize_disease(Path(tmp) / "leaves", per_class=6, image_size=32, seed=3)
        raw = {"seed": 0, "output_dir": str(Path(tmp) / "runs"), "run_name": "old", "device": "cpu",
               "data": {"root": str(root), "image_size": 32, "batch_size": 8, "num_workers": 0,
                        "checks": {"enabled": False}},
               "model": {"backbone": "test_efficientnet"},
               "training": {"epochs": 1, "learning_rate": 0.003, "progress_bar": False},
               "evaluation": {"bootstrap_samples": 50, "report": False}, "tracking": {"backends": []}}
        result = train(validate_config(raw))
        run = Path(result.run_dir)
        for name in ("run", "package", "images"):
            shutil.rmtree(HERE / name, ignore_errors=True)
        package_run(run, HERE / "package")
        images = HERE / "images"
        images.mkdir()
        for path in sorted(root.rglob("*.jpg"))[::6][:4]:
            shutil.copy(path, images / f"{path.parent.name}_{path.name}")
        _copy_run(run, HERE / "run")
    expected = {}
    for name in ("run", "package"):
        with load_model(str(HERE / name)) as model:
            predictions = model.predict(sorted(str(p) for p in images.iterdir()))
            expected[name] = [{"image": Path(p.source).name, "label": p.label, "probabilities": p.probabilities}
                              for p in predictions]
    (HERE / "expected.json").write_text(json.dumps(expected, indent=2) + "\n", encoding="utf-8")


def _copy_run(run: Path, out: Path) -> None:
    """The run folder without last.pt and without the optimizer state in best.pt (size), paths made relative."""
    shutil.copytree(run, out, ignore=shutil.ignore_patterns("last.pt*", "*.lock", "cache", "*.png"))
    best = next(out.rglob("best.pt"))
    checkpoint = torch.load(best, map_location="cpu", weights_only=False)
    for key in ("optimizer", "scheduler", "scaler"):
        if key in checkpoint:
            checkpoint[key] = None
    from plantpheno.training.checkpoint import save_checkpoint

    for sidecar in best.parent.glob("best.pt.*"):
        sidecar.unlink()
    save_checkpoint(best, checkpoint)


if __name__ == "__main__":
    sys.exit(main())
