"""The frozen-backbone feature cache trains the head to the same result as the uncached frozen path."""

from __future__ import annotations

import json

import pytest
import torch

from plantpheno import pipeline
from plantpheno.errors import ConfigError
from plantpheno.reporting import RecordingReporter


def _log(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


def test_cached_features_match_the_uncached_frozen_path(make_config, disease_root):
    sections = dict(data={"root": str(disease_root), "augment": {"enabled": False}},
                    model={"backbone": "test_resnet", "freeze_backbone": True, "dropout": 0.3},
                    training={"epochs": 3, "learning_rate": 0.01}, tracking={"system_metrics_interval": 0})
    plain = pipeline.train(make_config(run_name="plain", **sections))
    sections["training"] = {**sections["training"], "feature_cache": True}
    cached = pipeline.train(make_config(run_name="cached", **sections))

    a = torch.load(plain.run_dir / "checkpoints/best.pt", weights_only=True)["model"]
    b = torch.load(cached.run_dir / "checkpoints/best.pt", weights_only=True)["model"]
    assert a.keys() == b.keys()  # the cached run still checkpoints the whole network
    for key in a:
        if key.startswith("fc."):
            assert torch.allclose(a[key], b[key], atol=1e-5), key  # features batched differently: float noise
        else:
            assert torch.equal(a[key], b[key]), f"frozen backbone tensor {key} changed"
    for x, y in zip(_log(plain.run_dir), _log(cached.run_dir)):
        assert x.keys() == y.keys()
        for key in x:  # figures within a tolerance; words (the phase) exactly
            assert x[key] == (y[key] if isinstance(y[key], str) else pytest.approx(y[key], rel=1e-4, abs=1e-5)), key
    assert plain.metrics["accuracy"] == cached.metrics["accuracy"]


def test_feature_cache_needs_a_frozen_backbone(make_config, disease_root):
    with pytest.raises(ConfigError, match="training.feature_cache=true needs model.freeze_backbone=true"):
        make_config(data={"root": str(disease_root)}, training={"feature_cache": True})


def test_augmented_views_are_cached_once_and_drawn_per_epoch(make_config, disease_root):
    from plantpheno.training.features import FeatureDataset, feature_loaders

    sections = dict(data={"root": str(disease_root)},
                    model={"backbone": "test_resnet", "freeze_backbone": True},
                    training={"epochs": 2, "learning_rate": 0.01, "feature_cache": True, "feature_cache_views": 3},
                    tracking={"system_metrics_interval": 0})
    config = make_config(**sections)
    setup = pipeline._setup(config, manifest=None, load_pretrained=True, reporter=RecordingReporter())
    loaders = feature_loaders(setup.prepared, setup.loaders, setup.model, config.data,
                              views=config.training.feature_cache_views, seed=config.seed, mean=setup.meta.mean,
                              std=setup.meta.std, device=setup.device)
    train = loaders["train"].dataset
    assert isinstance(train, FeatureDataset) and train.features.shape[0] == 3
    n = len(setup.prepared.splits["train"])
    assert train.features.shape[1] == n and loaders["val"].dataset.features.shape[0] == 1
    plain, view1, view2 = train.features
    assert not torch.allclose(plain, view1) and not torch.allclose(view1, view2)  # augmented, each differently
    # view 0 is the evaluation preprocessing: the same features the one-view cache holds
    one = make_config(**{**sections, "training": {**sections["training"], "feature_cache_views": 1}})
    single = feature_loaders(setup.prepared, setup.loaders, setup.model, one.data,
                             views=one.training.feature_cache_views, seed=one.seed, mean=setup.meta.mean,
                             std=setup.meta.std, device=setup.device)["train"].dataset
    torch.testing.assert_close(single.features[0], plain)
    # the same views again (fixed seeds), and epochs draw different views of an image
    again = feature_loaders(setup.prepared, setup.loaders, setup.model, config.data,
                            views=config.training.feature_cache_views, seed=config.seed, mean=setup.meta.mean,
                            std=setup.meta.std, device=setup.device)["train"].dataset
    torch.testing.assert_close(again.features, train.features)
    assert len({seed % 3 for _, seed in loaders["train"].sampler}) == 3
    pipeline.close_loaders(setup.loaders)
    result = pipeline.train(config)
    assert (result.run_dir / "eval/test/metrics.json").is_file()


def test_feature_views_need_the_cache_and_augmentation(make_config, disease_root):
    model = {"backbone": "test_resnet", "freeze_backbone": True}
    with pytest.raises(ConfigError, match="feature_cache_views=2 needs"):
        make_config(data={"root": str(disease_root), "augment": {"enabled": False}}, model=model,
                    training={"feature_cache": True, "feature_cache_views": 2})
    with pytest.raises(ConfigError, match="feature_cache_views=2 needs"):
        make_config(data={"root": str(disease_root)}, model=model, training={"feature_cache_views": 2})


@pytest.mark.parametrize("augment", [False, True], ids=["train-cache-at-eval-size", "train-cache-with-margin"])
def test_features_come_from_the_decoded_image_cache(make_config, disease_root, monkeypatch, augment):
    import plantpheno.data.datasets as datasets
    from plantpheno.training.features import cache_inputs

    def sections(cache):
        return dict(data={"root": str(disease_root), "cache": cache, "num_workers": 0,
                          "augment": {"enabled": augment}},
                    model={"backbone": "test_resnet", "freeze_backbone": True},
                    training={"feature_cache": True}, tracking={"system_metrics_interval": 0})

    def features(config):
        torch.manual_seed(0)  # the same random backbone both times
        setup = pipeline._setup(config, manifest=None, load_pretrained=True, reporter=RecordingReporter())
        decoded: list = []
        real = datasets.load_rgb
        monkeypatch.setattr(datasets, "load_rgb", lambda path, **kw: decoded.append(path) or real(path, **kw))
        try:
            out = cache_inputs(setup.prepared, setup.loaders, setup.model, config.data,
                               views=config.training.feature_cache_views, seed=config.seed, mean=setup.meta.mean,
                               std=setup.meta.std, device=setup.device)
        finally:
            monkeypatch.setattr(datasets, "load_rgb", real)
            pipeline.close_loaders(setup.loaders)
        return out, len(decoded), {k: len(v) for k, v in setup.prepared.splits.items()}

    from_disk, disk_decodes, sizes = features(make_config(run_name="disk", **sections("none")))
    from_cache, cache_decodes, _ = features(make_config(run_name="memory", **sections("memory")))
    assert disk_decodes == sizes["train"] + sizes["val"]
    # val always reads the cache; train too when its cache holds the evaluation size (no random crops)
    assert cache_decodes == (sizes["train"] if augment else 0)
    for split in ("train", "val"):
        torch.testing.assert_close(from_cache[split], from_disk[split])
