"""One backbone pass a split, end to end: ``evaluate --fit-unknowns``'s figures (metrics.json, unknown.json, the
detector and the temperature) are those of the old route (a prediction pass, then the pooled features passed again),
and the backbone sees each test and val image once a TTA view (counted by a hook on its first convolution)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import plantpheno as pp
from conftest import tiny_config

UNKNOWN_FILES = ("eval/test/metrics.json", "eval/test/unknown.json", "ood.json", "temperature.json")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, disease_root) -> Path:
    from plantpheno import pipeline
    from plantpheno.config import validate_config

    raw = tiny_config(tmp_path_factory.mktemp("one-pass"), data={"root": str(disease_root)},
                      training={"epochs": 1, "progress_bar": False}, evaluation={"ood": {"k": 3}})
    return pipeline.train(validate_config(raw)).run_dir


class _ImagesSeen:
    """Counts the images through the backbone's first convolution (a forward hook)."""

    def __init__(self, model: nn.Module) -> None:
        from plantpheno.models.input_adapter import first_conv

        self.count = 0
        self.handle = first_conv(model)[1].register_forward_hook(self)

    def __call__(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        self.count += len(inputs[0])


def _job(run_dir: Path, tta: str) -> Any:
    """The job ``evaluate --fit-unknowns`` builds, with the best weights and evaluation.tta set to ``tta``."""
    from plantpheno import pipeline
    from plantpheno.config import config_to_dict, validate_config
    from plantpheno.reporting import default_reporter
    from plantpheno.run.folder import RunDir
    from plantpheno.training.checkpoint import checkpoint_to_use

    run = RunDir.of(run_dir)
    raw = config_to_dict(run.read_config())
    raw["evaluation"]["tta"] = tta
    job = pipeline._setup(validate_config(raw), manifest=run.split_manifest, load_pretrained=False,
                          reporter=default_reporter(None), splits=("test", "val", "train"))
    job.model.load_state_dict(checkpoint_to_use(run, default_reporter(None))["model"])
    return job


def _two_passes(job: Any, run_dir: Path) -> None:
    """The route before the single pass: predictions, then the pooled features passed again for the detector."""
    from plantpheno.evaluation.run_eval import evaluate_split
    from plantpheno.run.folder import RunDir
    from plantpheno.training.unknowns import detect_unknowns

    run = RunDir.of(run_dir)
    evaluate_split(job.model, job.loaders, split="test", task=job.task, prepared=job.prepared, config=job.config,
                   device=job.device, run=run, reporter=job.reporter, checkpoint_epoch=0)
    detect_unknowns(job, run, split="test", fit=True)


def _same(a: Any, b: Any, where: str) -> None:
    """Equal JSON values; floats within float32 tolerance (the two routes batch the images differently)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and not isinstance(b, bool):
        assert b == pytest.approx(a, rel=1e-4, abs=1e-5), f"{where}: {a} != {b}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.mark.parametrize("tta", ["none", "flips"])
def test_the_figures_are_the_two_pass_routes_and_each_split_passes_the_backbone_once(trained, tmp_path, tta):
    from plantpheno import pipeline
    from plantpheno.evaluation.ood import OODDetector, subsample
    from plantpheno.evaluation.tta import views
    from plantpheno.run.folder import RunDir

    old, new = tmp_path / "old", tmp_path / "new"
    shutil.copytree(trained, old)
    shutil.copytree(trained, new)
    job = _job(trained, tta)
    seen = _ImagesSeen(job.model)
    _two_passes(job, old)
    before, seen.count = seen.count, 0
    pipeline._evaluate(job, RunDir.of(new), split="test", best_epoch=0, fit_ood=True)
    for name in UNKNOWN_FILES:
        _same(json.loads((old / name).read_text()), json.loads((new / name).read_text()), name)
    old_bank, new_bank = OODDetector.load(old).bank, OODDetector.load(new).bank
    assert old_bank is not None and np.array_equal(old_bank, new_bank)

    splits = job.prepared.splits
    n_test, n_val = len(splits["test"]), len(splits["val"])
    n_train = len(subsample(len(splits["train"]), job.config.evaluation.ood.max_train_features, job.config.seed))
    n_views = len(views(tta))
    # test and val (its temperature) predicted once in each view, the train subsample pooled once for the kNN bank
    assert seen.count == n_views * (n_test + n_val) + n_train
    assert before == seen.count + n_test + n_val  # the old route passed test and val once more for the features


def test_sources_at_the_end_of_train_are_scored_from_the_evaluation_passes(tmp_path, disease_root):
    """evaluation.sources at the end of train: the other source's OOD scores come from its prediction pass and the
    in-source test scores from the test split's evaluation pass (no 'OOD scores' pass), and they are the scores
    of the old route (score_images: the pooled features passed again) to float32 rounding."""
    import csv

    from plantpheno import pipeline
    from plantpheno.config import validate_config
    from plantpheno.data.synth import synthesize_disease
    from plantpheno.evaluation.ood import OODDetector
    from plantpheno.reporting import RecordingReporter
    from plantpheno.training.source_unknowns import score_images

    field = synthesize_disease(tmp_path / "field", per_class=4, image_size=48, seed=7, style="field")
    raw = tiny_config(tmp_path, data={"root": str(disease_root)}, training={"epochs": 1, "progress_bar": False},
                      evaluation={"ood": {"k": 3}, "sources": [{"data": str(field), "name": "at_train"}]})
    reporter = RecordingReporter()
    run_dir = pipeline.train(validate_config(raw), reporter=reporter).run_dir
    passes = [desc for desc, *_ in reporter.progress_calls]
    # the train subsample's features for the kNN bank are the one pass train has to make
    assert [p for p in passes if p.startswith("OOD")] == ["OOD features (train)"], passes

    job = _job(run_dir, "none")
    detector = OODDetector.load(run_dir)
    with (run_dir / "eval" / "at_train" / "predictions.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    old = score_images(job.model, detector, [Path(r["path"]) for r in rows], meta=job.meta, batch_size=8,
                       device=job.device, reporter=None, desc="old route")
    assert [float(r["ood_score"]) for r in rows] == pytest.approx(old.tolist(), abs=2e-5)
    # evaluate --data in a new process has no test features at hand: it scores the test images in a pass of their
    # own (the old route) and finds the same separation
    again = pp.evaluate(run_dir, data=field, name="again", verbose=False)["unknowns"]
    at_train = json.loads((run_dir / "eval" / "at_train" / "metrics.json").read_text())["unknowns"]
    _same(at_train["separation"], again["separation"], "separation")
