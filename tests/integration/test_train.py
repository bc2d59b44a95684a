"""End-to-end training runs on tiny synthetic data (CPU, seconds each)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import StopAt
from plantpheno import pipeline
from plantpheno.errors import TrainingError
from plantpheno.training.loop import Interrupted

VOLATILE = ("time/", "lr_")  # wall-clock figures differ between any two runs


def _metrics_log(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith(VOLATILE)} for r in rows]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_classification_run_leaves_a_complete_run_directory(make_config, disease_root):
    config = make_config(data={"root": str(disease_root)})
    result = pipeline.train(config)
    run = result.run_dir
    assert run == config.output_dir / "default" / "run"
    for name in ("config.yaml", "split.csv", "dataset.json", "environment.json", "metrics.jsonl", "run.json",
                 "training_curves.png",
                 "checkpoints/best.pt", "checkpoints/last.pt", "eval/test/metrics.json",
                 "eval/test/classification_report.txt", "eval/test/per_class.csv",
                 "eval/test/confusion_matrix.png", "eval/test/predictions.csv"):
        assert (run / name).is_file(), name
    assert len(_metrics_log(run)) == 2
    metrics = json.loads((run / "eval/test/metrics.json").read_text())
    for key in ("accuracy", "macro_f1", "weighted_f1", "macro_precision", "weighted_recall", "confidence_interval"):
        assert key in metrics
    ci = metrics["confidence_interval"]
    assert ci["low"] <= metrics["accuracy"] <= ci["high"]
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    dataset = json.loads((run / "dataset.json").read_text())
    assert sum(dataset["num_images"].values()) == 64 and len(dataset["fingerprint"]) == 64
    predictions = (run / "eval/test/predictions.csv").read_text().splitlines()
    assert predictions[0].startswith("path,label,predicted,confidence,p_blight")
    assert len(predictions) - 1 == dataset["num_images"]["test"] == metrics["num_images"]


@pytest.mark.parametrize(("stop_step", "cache"), [(9, "none"), (5, "none"), (9, "disk")],
                         ids=["mid-epoch", "epoch-end", "mid-epoch-disk-cache"])
def test_interrupted_and_resumed_run_equals_uninterrupted_run(make_config, trained_run, disease_root, stop_step,
                                                              cache):
    # 44 training images, batch 8, ragged tail dropped -> 5 steps per epoch: step 9 is inside epoch 2,
    # step 5 ends epoch 1. With data.cache=disk the resumed run reads the cache the interrupted run wrote.
    sections = {"data": {"root": str(disease_root), "batch_size": 8, "cache": cache},
                "training": {"epochs": 3, "warmup_epochs": 0.5, "learning_rate": 0.003},
                "model": {"backbone": "test_resnet", "dropout": 0.2}}
    straight = trained_run(**sections)  # one uninterrupted reference per cache setting, shared by the stop steps
    assert json.loads((straight.run_dir / "dataset.json").read_text())["num_images"]["train"] == 44
    config = make_config(run_name="interrupted", **sections)
    with pytest.raises(Interrupted):
        pipeline.train(config, callbacks=[StopAt(stop_step)])
    run = config.output_dir / "default" / "interrupted"
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    resumed = pipeline.resume(run)

    for name in ("best.pt", "last.pt"):
        a, b = _weights(straight.run_dir / "checkpoints" / name), _weights(resumed.run_dir / "checkpoints" / name)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), f"{name} differs after resume"
    assert _metrics_log(straight.run_dir) == _metrics_log(resumed.run_dir)
    drop = ("confidence_interval",)
    assert {k: v for k, v in straight.metrics.items() if k not in drop} == {
        k: v for k, v in resumed.metrics.items() if k not in drop}
    assert straight.metrics["confidence_interval"] == resumed.metrics["confidence_interval"]
    if cache == "disk":  # one cache per split, shared by the interrupted and the resumed run
        assert len(list((config.output_dir / ".cache").glob("*.u8"))) == 3


class PoisonWeights:
    """Sets one weight to NaN after a given step, so the next loss is NaN."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_batch_end(self, trainer, loss, images) -> None:
        if trainer.state.global_step == self.step:
            with torch.no_grad():
                weight = next(trainer.model.parameters())
                weight[(0,) * weight.dim()] = float("nan")  # indexed: a channels_last weight has no flat view


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(make_config, disease_root):
    config = make_config(data={"root": str(disease_root)}, training={"epochs": 3})
    with pytest.raises(TrainingError, match=r"training loss became nan at epoch 2, batch 3.*last good checkpoint"):
        pipeline.train(config, callbacks=[PoisonWeights(7)])
    run = config.output_dir / "default" / "run"
    last = torch.load(run / "checkpoints/last.pt", weights_only=True)
    assert last["state"]["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in last["model"].values() if t.is_floating_point())
    assert json.loads((run / "run.json").read_text())["status"] == "failed"


def test_regression_run_reports_count_metrics(make_config, rosette_manifest):
    config = make_config(task="regression", data={"manifest": str(rosette_manifest)},
                         training={"epochs": 2, "monitor": "val/rmse"})
    result = pipeline.train(config)
    metrics = json.loads((result.run_dir / "eval/test/metrics.json").read_text())
    for key in ("mae", "rmse", "r2", "dic", "abs_dic", "mean_error", "count_within_one"):
        assert key in metrics
    assert metrics["confidence_interval"]["metric"] == "mae"
    assert metrics["baseline"]["kind"] == "training mean" and "verdict" in metrics["baseline"]
    assert (result.run_dir / "eval/test/predicted_vs_true.png").is_file()
    header = (result.run_dir / "eval/test/predictions.csv").read_text().splitlines()[0]
    assert header == "path,value,predicted,predicted_count,error"  # leaf counts: the rounded count too
    # every plant's three views stay in one split
    rows = (result.run_dir / "split.csv").read_text().splitlines()[1:]
    split_of_group: dict[str, set[str]] = {}
    for row in rows:
        _, _, split, group = row.rsplit(",", 3)
        split_of_group.setdefault(group, set()).add(split)
    assert all(len(s) == 1 for s in split_of_group.values())


@pytest.mark.parametrize("training", [
    {"loss": "focal", "class_weights": "balanced", "optimizer": "sgd", "scheduler": "step", "grad_clip_norm": 1.0},
    {"label_smoothing": 0.1, "optimizer": "adam", "scheduler": "plateau"},
    {"scheduler": "none", "early_stopping": {"patience": 1}, "epochs": 4},
], ids=["focal-sgd-step", "smoothing-adam-plateau", "early-stop"])
def test_training_options_run(make_config, disease_root, training):
    config = make_config(data={"root": str(disease_root), "class_balanced_sampling": True}, training=training)
    result = pipeline.train(config)
    assert result.state.epoch >= 1
    assert (result.run_dir / "eval/test/metrics.json").is_file()


class Prune:
    """Ends the run after epoch 1, as a tuning pruner would."""

    def on_epoch_end(self, trainer, metrics) -> None:
        from plantpheno.training.loop import EarlyExit

        class Pruned(EarlyExit):
            status = "pruned"

        raise Pruned(f"pruned at epoch {metrics['epoch']}")


def test_callback_can_end_a_run_early_with_a_status(make_config, disease_root):
    from plantpheno.training.loop import EarlyExit

    config = make_config(data={"root": str(disease_root)}, training={"epochs": 3})
    with pytest.raises(EarlyExit, match="pruned at epoch 1"):
        pipeline.train(config, callbacks=[Prune()])
    status = json.loads((config.output_dir / "default" / "run" / "run.json").read_text())
    assert status["status"] == "pruned" and status["reason"] == "pruned at epoch 1"
    assert len(_metrics_log(config.output_dir / "default" / "run")) == 1


@pytest.mark.slow
def test_compiled_channels_last_run_checkpoints_the_plain_network(make_config, disease_root):
    # torch.compile wraps the module the optimizer steps through; checkpoints and evaluation use the plain
    # network, so its weights carry no `_orig_mod.` prefix and load into an uncompiled model.
    config = make_config(data={"root": str(disease_root)},
                         training={"epochs": 1, "compile": True, "channels_last": "on", "warmup_epochs": 0})
    result = pipeline.train(config)
    weights = _weights(result.run_dir / "checkpoints" / "best.pt")
    assert weights and not any(k.startswith(("_orig_mod.", "module.")) for k in weights)
    assert 0.0 <= result.metrics["accuracy"] <= 1.0


def test_run_stops_its_loader_workers_when_it_ends(make_config, disease_root):
    # Persistent DataLoader workers must not outlive the run (left to the garbage collector they stalled the
    # next run in the same process by tens of seconds while it shut them down).
    import psutil

    before = {p.pid for p in psutil.Process().children(recursive=True)}
    config = make_config(data={"root": str(disease_root), "num_workers": 2}, training={"epochs": 1})
    result = pipeline.train(config)
    pipeline.evaluate_run(result.run_dir, split="val")
    left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before and p.is_running()
            and p.status() != psutil.STATUS_ZOMBIE]
    assert left == []


def test_evaluating_one_split_fills_only_that_splits_cache(make_config, disease_root):
    import shutil

    config = make_config(data={"root": str(disease_root), "cache": "disk"}, training={"epochs": 1})
    result = pipeline.train(config)
    cache_dir = config.output_dir / ".cache"
    assert len(list(cache_dir.glob("*.u8"))) == 3  # train, val, test
    shutil.rmtree(cache_dir)
    metrics = pipeline.evaluate_run(result.run_dir, split="val")
    assert metrics["split"] == "val"
    assert len(list(cache_dir.glob("*.u8"))) == 1


def test_augmenting_on_the_device_matches_augmenting_in_the_loader(make_config, disease_root):
    # data.augment.on_device ships uint8 pixels + per-sample parameters and augments in the training loop
    # (on CUDA: on the GPU). Here on the CPU it must give the loader path's images and the same training run.
    from plantpheno.data.batch_augment import Pending
    from plantpheno.data.datasets import build_loaders, close_loaders
    from plantpheno.data.prepared import prepare_data

    batches, results = {}, {}
    for mode in ("off", "on"):
        config = make_config(run_name=f"dev-{mode}", data={"root": str(disease_root), "num_workers": 1,
                                                            "augment": {"on_device": mode}},
                             training={"epochs": 2, "warmup_epochs": 0})
        loaders = build_loaders(prepare_data(config), config.data, seed=config.seed, output_dir=config.output_dir,
                                mean=(0.5,) * 3, std=(0.5,) * 3, splits=("train",))
        loader = loaders["train"]
        loader.sampler.set_epoch(3)
        images, _ = next(iter(loader))
        assert isinstance(images, Pending) == (mode == "on")
        batches[mode] = loaders.finish(images, torch.device("cpu"))
        close_loaders(loaders)
        results[mode] = pipeline.train(config)
    torch.testing.assert_close(batches["on"], batches["off"], atol=1e-5, rtol=0)
    for a, b in zip(_metrics_log(results["off"].run_dir), _metrics_log(results["on"].run_dir)):
        for key in a:  # figures within a tolerance; words (the phase) exactly
            expected = b[key] if isinstance(b[key], str) else pytest.approx(b[key], rel=1e-3, abs=1e-4)
            assert a[key] == expected, key
