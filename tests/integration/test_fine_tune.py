"""The fine-tune phase: after the frozen-backbone head, the last backbone blocks train for a few epochs."""

from __future__ import annotations

import json

import pytest
import timm
import torch

from conftest import StopAt
from plantpheno import pipeline
from plantpheno.errors import ConfigError, ModelError
from plantpheno.run.listing import read_run
from plantpheno.training.fine_tune import fine_tune_cut, sequential_trunk, unfreeze_last
from plantpheno.training.loop import Interrupted


def _log(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _sections(root, **training):
    return dict(data={"root": str(root), "augment": {"enabled": False}, "batch_size": 8},
                model={"backbone": "test_resnet", "freeze_backbone": True, "dropout": 0.3},
                training={"epochs": 2, "learning_rate": 0.01, **training}, tracking={"system_metrics_interval": 0})


def test_fine_tune_trains_only_the_last_blocks_after_the_head(make_config, disease_root):
    head_only = pipeline.train(make_config(run_name="head", **_sections(disease_root)))
    tuned = pipeline.train(make_config(run_name="tuned", **_sections(
        disease_root, fine_tune={"epochs": 2, "blocks": 1, "learning_rate": 0.003})))
    log = _log(tuned.run_dir)
    assert [r["epoch"] for r in log] == [1, 2, 3, 4]
    assert _log(head_only.run_dir) == log[:2]  # the head phase is unchanged by what follows it
    assert log[2]["lr"] == pytest.approx(0.003)  # the phase's own rate, fresh schedule, no warmup
    last = _weights(tuned.run_dir / "checkpoints/last.pt")
    assert last["state"]["epoch"] == 4 and last["state"]["phase"] == "fine_tune" and last["state"]["phase_start"] == 2
    before = _weights(head_only.run_dir / "checkpoints/last.pt")["model"]
    for key, value in last["model"].items():
        moved = not torch.equal(value, before[key])
        if key.startswith(("layer4.", "fc.")) and not key.endswith(("running_mean", "running_var",
                                                                    "num_batches_tracked")):
            assert moved, f"{key} should have trained"
        else:  # the rest of the backbone, and every BatchNorm statistic, stays as it was
            assert not moved, f"{key} changed"
    assert (tuned.run_dir / "eval/test/metrics.json").is_file()
    assert json.loads((tuned.run_dir / "run.json").read_text())["status"] == "completed"
    summary = read_run(tuned.run_dir)  # `plantpheno runs` counts both phases' epochs
    assert (summary.epochs_done, summary.epochs_planned) == (4, 4)


def test_cached_fine_tune_matches_fine_tuning_on_images(make_config, disease_root):
    ft = {"epochs": 2, "blocks": 2, "learning_rate": 0.003}
    plain = pipeline.train(make_config(run_name="plain", **_sections(disease_root, fine_tune=ft)))
    cached = pipeline.train(make_config(run_name="cached", **_sections(disease_root, fine_tune=ft,
                                                                        feature_cache=True)))
    for x, y in zip(_log(plain.run_dir), _log(cached.run_dir), strict=True):
        assert x.keys() == y.keys()
        for key in x:  # figures within a tolerance; words (the phase) exactly
            expected = y[key] if isinstance(y[key], str) else pytest.approx(y[key], rel=1e-3, abs=1e-4)
            assert x[key] == expected, (x["epoch"], key)
    a = _weights(plain.run_dir / "checkpoints/last.pt")["model"]
    b = _weights(cached.run_dir / "checkpoints/last.pt")["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-4, rtol=1e-3, msg=key)
    assert plain.metrics["accuracy"] == cached.metrics["accuracy"]


def test_the_final_evaluation_takes_the_validation_predictions_from_the_cache(make_config, disease_root,
                                                                              monkeypatch):
    """With the feature cache the temperature is fitted on the cached validation inputs run through the trained
    blocks (no backbone pass over the validation images); `evaluate`, which has no cache, runs the images and
    fits the same temperature."""
    from plantpheno.evaluation import run_eval

    seen, real = [], run_eval.predict

    def spy(net, loader, **kwargs):  # records which module ran on which inputs; the real predict does the work
        seen.append((type(net).__name__, type(loader.dataset).__name__))
        return real(net, loader, **kwargs)

    monkeypatch.setattr(run_eval, "predict", spy)
    ft = {"epochs": 2, "blocks": 2, "learning_rate": 0.003}
    cached = pipeline.train(make_config(run_name="cached", **_sections(disease_root, fine_tune=ft,
                                                                        feature_cache=True)))
    assert seen == [("ResNet", "ImageDataset"), ("CutSuffix", "FeatureDataset")]  # test on images, val cached
    during = json.loads((cached.run_dir / "temperature.json").read_text())
    seen.clear()
    pipeline.evaluate_run(cached.run_dir)
    assert seen == [("ResNet", "ImageDataset"), ("ResNet", "ImageDataset")]
    after = json.loads((cached.run_dir / "temperature.json").read_text())
    for key in ("fitted_temperature", "nll_before", "nll_after"):
        assert after[key] == pytest.approx(during[key], rel=1e-4, abs=1e-6), key
    assert after["num_images"] == during["num_images"] > 0


@pytest.mark.parametrize("stop_step", [10, 12, 20], ids=["last-head-step", "early-fine-tune", "late-fine-tune"])
def test_resumed_fine_tune_equals_the_uninterrupted_run(make_config, trained_run, disease_root, stop_step):
    # 44 training images, batch 8, ragged tail dropped -> 5 steps an epoch: the 2 head epochs end at step 10
    # (stopped there, the head's last validation is still to run); step 12 is inside the first fine-tune
    # epoch and step 20 ends the second one
    sections = _sections(disease_root, feature_cache=True, fine_tune={"epochs": 3, "blocks": 1})
    sections["data"]["augment"] = {"enabled": True}
    straight = trained_run(**sections)  # one uninterrupted reference, shared by the three stop steps
    config = make_config(run_name="interrupted", **sections)
    with pytest.raises(Interrupted):
        pipeline.train(config, callbacks=[StopAt(stop_step)])
    run = config.output_dir / "default" / "interrupted"
    resumed = pipeline.resume(run)
    for name in ("best.pt", "last.pt"):
        a = _weights(straight.run_dir / "checkpoints" / name)["model"]
        b = _weights(resumed.run_dir / "checkpoints" / name)["model"]
        assert all(torch.equal(a[k], b[k]) for k in a), f"{name} differs after resume"
    drop = ("time/", "lr")
    strip = [{k: v for k, v in r.items() if not k.startswith(drop)} for r in _log(straight.run_dir)]
    assert strip == [{k: v for k, v in r.items() if not k.startswith(drop)} for r in _log(resumed.run_dir)]
    assert straight.metrics["accuracy"] == resumed.metrics["accuracy"]


def test_fine_tune_needs_a_frozen_backbone(make_config, disease_root):
    with pytest.raises(ConfigError, match=r"training.fine_tune.epochs=2 needs model.freeze_backbone=true"):
        make_config(data={"root": str(disease_root)}, training={"fine_tune": {"epochs": 2}})


def test_too_many_blocks_fail_before_any_training(make_config, disease_root):
    config = make_config(**_sections(disease_root, fine_tune={"epochs": 2, "blocks": 99}))
    with pytest.raises(ModelError, match=r"fine_tune.blocks: 99 is more than the 5 blocks of ResNet; use 1 to 5"):
        pipeline.train(config)
    assert not (config.output_dir / "default").exists()  # no run folder left behind


def test_backbones_that_are_no_chain_fine_tune_on_images(make_config, disease_root):
    sections = _sections(disease_root, feature_cache=True, fine_tune={"epochs": 1, "blocks": 1})
    sections["model"] = {"backbone": "test_vit", "freeze_backbone": True}
    sections["data"]["image_size"] = 32
    result = pipeline.train(make_config(**sections))
    assert [r["epoch"] for r in _log(result.run_dir)] == [1, 2, 3]


def test_blocks_follow_timm_groups_and_the_cut_falls_where_they_begin():
    model = timm.create_model("tf_efficientnet_lite0", num_classes=3)
    for p in model.parameters():
        p.requires_grad_(False)
    names = unfreeze_last(model, 1)
    assert {n.split(".")[0] for n in names} == {"blocks", "conv_head", "bn2"}
    assert {n.split(".")[1] for n in names if n.startswith("blocks.")} == {"6"}
    assert {n for n, p in model.named_parameters() if p.requires_grad} == set(names)
    assert {n.split(".")[1] for n in unfreeze_last(model, 2) if n.startswith("blocks.")} == {"5", "6"}
    with pytest.raises(ModelError, match=r"fine_tune.blocks: 99 is more than the 8 blocks"):
        unfreeze_last(model, 99)
    trunk, cut = fine_tune_cut(model, 1, 64)
    assert trunk[cut] is model.blocks[6][0] and trunk[-1] is model.bn2
    assert sequential_trunk(timm.create_model("test_vit"), 32) is None


@pytest.mark.parametrize("name", ["test_resnet", "test_efficientnet", "mobilenetv3_small_050"])
def test_the_chain_reproduces_forward_features(name):
    model = timm.create_model(name, num_classes=3).eval()
    trunk = sequential_trunk(model, 64)
    assert trunk is not None
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        y = x
        for module in trunk:
            y = module(y)
        torch.testing.assert_close(y, model.forward_features(x))
