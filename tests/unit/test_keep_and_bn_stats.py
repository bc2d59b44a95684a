"""``training.keep: last`` (the final epoch's weights, a fixed schedule) and ``model.bn_stats: recompute`` (AdaBN:
BatchNorm statistics re-estimated on the run's training images before any cached pass)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from plantpheno.config import validate_config
from plantpheno.errors import ConfigError
from plantpheno.training.callbacks import EarlyStopping
from plantpheno.training.checkpoint import load_checkpoint
from plantpheno.training.feature_store import FeatureStore
from plantpheno.training.loop import TrainState
from plantpheno.training.phases import FrozenFeatures
from conftest import tiny_config


def test_keep_parses_defaults_to_best_and_refuses_bad_values(tmp_path):
    assert validate_config(tiny_config(tmp_path, data={"root": str(tmp_path)})).training.keep == "best"
    last = validate_config(tiny_config(tmp_path, data={"root": str(tmp_path)}, training={"keep": "last"}))
    assert last.training.keep == "last"
    with pytest.raises(ConfigError, match=r"training\.keep.*(best|last)"):
        validate_config(tiny_config(tmp_path, data={"root": str(tmp_path)}, training={"keep": "final"}))
    with pytest.raises(ConfigError, match="early_stopping.patience"):
        validate_config(tiny_config(tmp_path, data={"root": str(tmp_path)},
                                    training={"keep": "last", "early_stopping": {"patience": 2}}))


def test_bn_stats_parses_defaults_to_keep_and_refuses_bad_values(tmp_path):
    assert validate_config(tiny_config(tmp_path, data={"root": str(tmp_path)})).model.bn_stats == "keep"
    with pytest.raises(ConfigError, match=r"model\.bn_stats.*(keep|recompute)"):
        validate_config(tiny_config(tmp_path, data={"root": str(tmp_path)}, model={"bn_stats": "adabn"}))


@pytest.mark.parametrize(("keep_last", "kept"), [(False, 1), (True, 3)])
def test_keep_last_keeps_the_final_epoch_where_validation_liked_the_first(keep_last, kept):
    stopping = EarlyStopping(patience=None, min_delta=0.0, keep_last=keep_last)
    trainer = SimpleNamespace(monitor=("val/macro_f1", "max"), state=TrainState(), should_stop=False)
    for epoch, f1 in enumerate((0.9, 0.5, 0.3), start=1):
        trainer.state.epoch = epoch
        stopping.on_epoch_end(trainer, {"val/macro_f1": f1})
    assert trainer.state.best_epoch == kept


def test_a_keep_last_run_ends_with_its_final_epochs_weights(tmp_path, disease_root):
    from plantpheno import pipeline

    config = validate_config(tiny_config(tmp_path, data={"root": str(disease_root)},
                                         training={"epochs": 3, "keep": "last"}))
    result = pipeline.train(config)
    best, last = (load_checkpoint(result.run_dir / "checkpoints" / name) for name in ("best.pt", "last.pt"))
    assert result.state.best_epoch == 3 and best["state"]["epoch"] == last["state"]["epoch"] == 3
    for key, value in last["model"].items():
        assert torch.equal(best["model"][key], value), key


def _first_batchnorm(model: torch.nn.Module) -> torch.nn.modules.batchnorm._BatchNorm:
    from plantpheno.training.bn_stats import batchnorm_layers

    return batchnorm_layers(model)[0]


def test_recompute_sets_the_running_stats_to_the_training_images_statistics(tmp_path, disease_root):
    from plantpheno import pipeline
    from plantpheno.reporting import LoggingReporter
    from plantpheno.models import normalization
    from plantpheno.training.features import extract_features

    def setup(bn_stats: str):
        config = validate_config(tiny_config(tmp_path, data={"root": str(disease_root)},
                                             model={"bn_stats": bn_stats, "freeze_backbone": True}))
        return pipeline._setup(config, manifest=None, load_pretrained=True, reporter=LoggingReporter())

    kept, job = setup("keep"), setup("recompute")
    bn = _first_batchnorm(job.model)
    assert not torch.allclose(bn.running_mean, _first_batchnorm(kept.model).running_mean)
    # the layer's inputs over the training images (the evaluation preprocessing), seen independently by a hook
    seen: list[torch.Tensor] = []
    hook = bn.register_forward_hook(lambda module, args, out: seen.append(args[0].detach()))
    try:
        paths = [s.path for s in job.prepared.splits["train"]]
        mean, std = normalization(job.model)
        extract_features(job.model, paths, image_size=32, mean=mean, std=std, batch_size=len(paths),
                         device=torch.device("cpu"), num_workers=0, fn=job.model.forward_features)
    finally:
        hook.remove()
    inputs = torch.cat(seen)
    torch.testing.assert_close(bn.running_mean, inputs.mean(dim=(0, 2, 3)), rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(bn.running_var, inputs.var(dim=(0, 2, 3)), rtol=0.15, atol=1e-3)


def test_the_feature_store_key_follows_the_batchnorm_statistics(tmp_path):
    """A pass made with the parent's statistics, or with statistics of other training images, is never served."""
    def key(bn_stats: str, train: list[str]) -> object:
        config = validate_config(tiny_config(tmp_path, data={"root": str(tmp_path)},
                                             model={"bn_stats": bn_stats, "init_from": "runs/lab",
                                                    "freeze_backbone": True, "pretrained": True},
                                             training={"feature_cache": True}))
        prepared = SimpleNamespace(splits={"train": [SimpleNamespace(path=Path(p)) for p in train]}, band_norm=None)
        features = FrozenFeatures(None, prepared, None, config, mean=(0.5,) * 3,  # type: ignore[arg-type]
                                  std=(0.5,) * 3, device=torch.device("cpu"), reporter=None, store=FeatureStore())
        return features._store_key("pooled")

    assert key("recompute", ["a.jpg", "b.jpg"]) != key("keep", ["a.jpg", "b.jpg"])
    assert key("recompute", ["a.jpg", "b.jpg"]) != key("recompute", ["a.jpg", "c.jpg"])
    assert key("recompute", ["a.jpg", "b.jpg"]) == key("recompute", ["b.jpg", "a.jpg"])
    assert key("keep", ["a.jpg"]) == key("keep", ["c.jpg"])  # the kept statistics do not depend on the images


@pytest.mark.parametrize(("keep", "says"), [("best", "Best epoch 2 by val/macro_f1"),
                                            ("last", "The last epoch (2) kept (training.keep: last")])
def test_the_reports_curves_say_which_epoch_was_kept(tmp_path, keep, says):
    from plantpheno.evaluation.html_report import _curves
    from plantpheno.run.folder import RunDir

    run = RunDir(tmp_path)
    run.metrics_log.write_text('{"epoch": 1, "train/loss": 1.0, "val/loss": 0.9, "val/macro_f1": 0.5}\n'
                               '{"epoch": 2, "train/loss": 0.5, "val/loss": 0.8, "val/macro_f1": 0.4}\n')
    config = validate_config(tiny_config(tmp_path, data={"root": str(tmp_path)}, training={"keep": keep}))
    html = _curves(run, config, {"best_epoch": 2}, SimpleNamespace(task="classification", checkpoint_epoch=2))
    assert says in html
