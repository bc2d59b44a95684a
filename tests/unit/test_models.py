"""build_model, local pretrained weights, frozen backbones and normalisation defaults."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

from conftest import TINY_BACKBONE
from plantpheno.errors import ModelError
from plantpheno.models import build_model, head_parameter_names, normalization, set_train_mode
from plantpheno.training.checkpoint import save_checkpoint
from plantpheno.training.optim import build_optimizer

HEAD = {"fc.weight", "fc.bias"}  # test_resnet's classifier


def _batch(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(7))


# ----------------------------------------------------------------------------------------------
# build_model
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backbone", [TINY_BACKBONE, "test_efficientnet"])
@pytest.mark.parametrize(("task", "num_outputs"), [("classification", 5), ("classification", 2), ("regression", 1)])
def test_head_has_one_output_per_class_or_one_for_a_trait(cfg, backbone, task, num_outputs) -> None:
    config = cfg(task=task, model={"backbone": backbone})
    model = build_model(config.model, num_outputs=num_outputs).eval()
    with torch.no_grad():
        out = model(_batch())
    assert out.shape == (2, num_outputs)
    assert model.get_classifier().out_features == num_outputs


@pytest.mark.parametrize("backbone", [TINY_BACKBONE, "test_efficientnet", "tf_efficientnet_lite0"])
def test_a_trait_head_starts_as_the_mean_predictor(cfg, backbone) -> None:
    """timm's EfficientNet head init draws U(-1, 1) for one output: a trait model's first predictions were tens
    of standard deviations off (see plantpheno.models.zero_head); a regression head starts at zero instead."""
    from plantpheno.training.objectives import Regression

    config = cfg(task="regression", model={"backbone": backbone})
    model = build_model(config.model, num_outputs=1, regression=True).eval()
    with torch.no_grad():
        out = model(_batch(3))
    assert torch.equal(out, torch.zeros(3, 1))
    torch.testing.assert_close(Regression(7.5, 2.0).predictions(out), torch.full((3,), 7.5))
    # a classification head keeps timm's initialisation (the recipes' figures were measured with it)
    classifier = build_model(config.model, num_outputs=3).get_classifier()
    assert classifier.weight.abs().sum() > 0


def test_a_trait_head_in_a_weights_file_is_kept(cfg, tmp_path) -> None:
    config = cfg(task="regression", model={"backbone": TINY_BACKBONE})
    trained = build_model(config.model, num_outputs=1)  # timm's init: a non-zero head
    save_file(trained.state_dict(), str(tmp_path / "trait.safetensors"))
    loaded = build_model(config.model.model_copy(update={"pretrained": tmp_path / "trait.safetensors"}),
                         num_outputs=1, regression=True)
    assert torch.equal(loaded.get_classifier().weight, trained.get_classifier().weight)


@pytest.mark.parametrize(("typo", "suggestion"), [("resnet1", "resnet18"), ("resnet-18", "resnet18"),
                                                   ("test_resnt", "test_resnet")])
def test_unknown_backbone_is_named_with_close_suggestions(cfg, typo, suggestion) -> None:
    config = cfg(model={"backbone": typo})
    with pytest.raises(ModelError) as err:
        build_model(config.model, num_outputs=3)
    msg = str(err.value)
    assert repr(typo) in msg
    assert "did you mean" in msg and suggestion in msg


def test_unknown_backbone_without_close_names_points_to_list_models(cfg) -> None:
    with pytest.raises(ModelError, match="list_models"):
        build_model(cfg(model={"backbone": "zzzzqqqq"}).model, num_outputs=3)


def test_pretrained_true_offline_fails_fast_with_a_hint(cfg) -> None:
    config = cfg(model={"backbone": TINY_BACKBONE, "pretrained": True})
    start = time.monotonic()
    with pytest.raises(ModelError) as err:
        build_model(config.model, num_outputs=3)
    assert time.monotonic() - start < 10, "offline download attempt must not hang"
    msg = str(err.value)
    assert TINY_BACKBONE in msg
    assert "Offline" in msg and "local weights file" in msg


def test_dropout_reaches_the_model(cfg) -> None:
    x = _batch(2)
    dropped = build_model(cfg(model={"backbone": TINY_BACKBONE, "dropout": 0.5}).model, num_outputs=3)
    plain = build_model(cfg(model={"backbone": TINY_BACKBONE}).model, num_outputs=3)
    assert dropped.drop_rate == 0.5 and plain.drop_rate == 0.0
    with torch.no_grad():
        # Training mode: BatchNorm uses batch statistics (deterministic), so only dropout can differ.
        dropped.train(), plain.train()
        assert not torch.equal(dropped(x), dropped(x))
        assert torch.equal(plain(x), plain(x))
        dropped.eval()
        assert torch.equal(dropped(x), dropped(x))


# ----------------------------------------------------------------------------------------------
# Local pretrained weights
# ----------------------------------------------------------------------------------------------


def _source_state(backbone: str = TINY_BACKBONE, num_classes: int = 1000) -> dict[str, torch.Tensor]:
    """A 1000-class state_dict whose every float tensor holds distinctive values (incl. BN stats)."""
    torch.manual_seed(123)
    state = timm.create_model(backbone, pretrained=False, num_classes=num_classes).state_dict()
    with torch.no_grad():
        for value in state.values():
            if value.is_floating_point():
                value.copy_(torch.rand_like(value) + 0.5)
            else:
                value.fill_(17)
    return state


def _write_pt(state, path: Path) -> Path:
    torch.save(state, path)
    return path


WRITERS = {
    "plain.pt": lambda s, p: _write_pt(s, p),
    "wrapped.pt": lambda s, p: _write_pt({"state_dict": s, "epoch": 3}, p),
    "ddp.pth": lambda s, p: _write_pt({f"module.{k}": v for k, v in s.items()}, p),
    "weights.safetensors": lambda s, p: save_file({k: v.contiguous() for k, v in s.items()}, str(p)) or p,
    # A plantpheno checkpoint (best.pt of an earlier run) works as pretrained weights too.
    "best.pt": lambda s, p: save_checkpoint(p, {"model": s, "meta": {"class_names": ["a", "b"]}}) or p,
}


@pytest.mark.parametrize("filename", list(WRITERS))
def test_local_weights_copy_the_backbone_and_keep_a_fresh_head(cfg, tmp_path, filename) -> None:
    source = _source_state()
    path = WRITERS[filename](source, tmp_path / filename)
    config = cfg(model={"backbone": TINY_BACKBONE, "pretrained": str(path)})
    assert config.model.pretrained == path

    torch.manual_seed(0)
    model = build_model(config.model, num_outputs=5)
    torch.manual_seed(0)
    fresh = build_model(cfg(model={"backbone": TINY_BACKBONE}).model, num_outputs=5)

    loaded, initial = model.state_dict(), fresh.state_dict()
    assert set(loaded) == set(source)
    for key, value in source.items():
        if key in HEAD:
            continue
        assert torch.equal(loaded[key], value), f"{key} not copied from {filename}"
    assert not torch.equal(loaded["conv1.0.weight"], initial["conv1.0.weight"])
    # The 1000-class head could not be used: the 5-class head is exactly what a fresh model gets.
    assert loaded["fc.weight"].shape == (5, source["fc.weight"].shape[1])
    for key in HEAD:
        assert torch.equal(loaded[key], initial[key])
    with torch.no_grad():
        assert model.eval()(_batch()).shape == (2, 5)


def test_weights_of_another_architecture_list_missing_and_unexpected_keys(cfg, tmp_path) -> None:
    other = _source_state("test_efficientnet")
    path = _write_pt(other, tmp_path / "effnet.pt")
    with pytest.raises(ModelError) as err:
        build_model(cfg(model={"backbone": TINY_BACKBONE, "pretrained": str(path)}).model, num_outputs=5)
    msg = str(err.value)
    assert str(path) in msg
    assert "missing" in msg and "unexpected" in msg
    assert "conv1.0.weight" in msg  # a test_resnet key the file lacks
    assert any(key in msg for key in other if key not in timm.create_model(TINY_BACKBONE).state_dict())


def test_weights_with_a_wrong_backbone_shape_are_refused(cfg, tmp_path) -> None:
    state = _source_state()
    state["conv1.0.weight"] = torch.zeros(3, 3, 3, 3)
    path = _write_pt(state, tmp_path / "bad_shape.pt")
    with pytest.raises(ModelError, match=r"wrong shape.*conv1\.0\.weight"):
        build_model(cfg(model={"backbone": TINY_BACKBONE, "pretrained": str(path)}).model, num_outputs=5)


def test_missing_weights_file_is_named(cfg, tmp_path) -> None:
    path = tmp_path / "nowhere" / "weights.pt"
    with pytest.raises(ModelError) as err:
        build_model(cfg(model={"backbone": TINY_BACKBONE, "pretrained": str(path)}).model, num_outputs=5)
    assert str(path) in str(err.value) and "does not exist" in str(err.value)


@pytest.mark.parametrize("filename", ["corrupt.pt", "corrupt.safetensors", "truncated.pt", "truncated.safetensors"])
def test_corrupt_weights_file_is_named(cfg, tmp_path, filename) -> None:
    path = tmp_path / filename
    if filename.startswith("corrupt"):
        path.write_bytes(b"this is not a weights file\n" * 10)
    else:
        WRITERS["weights.safetensors" if filename.endswith("safetensors") else "plain.pt"](_source_state(), path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError) as err:
        build_model(cfg(model={"backbone": TINY_BACKBONE, "pretrained": str(path)}).model, num_outputs=5)
    assert str(path) in str(err.value)


def test_a_file_without_tensors_is_refused(cfg, tmp_path) -> None:
    path = _write_pt({"epoch": 3, "note": "no weights here"}, tmp_path / "meta.pt")
    with pytest.raises(ModelError, match="state_dict of tensors"):
        build_model(cfg(model={"backbone": TINY_BACKBONE, "pretrained": str(path)}).model, num_outputs=5)


class _Exploit:
    """Unpickling this runs ``open(marker, 'w')``: what weights_only=False would execute."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_pickled_python_objects_are_refused_without_running_them(cfg, tmp_path) -> None:
    marker = tmp_path / "pwned"
    state = _source_state()
    path = _write_pt({"state_dict": state, "payload": _Exploit(marker)}, tmp_path / "evil.pt")
    with pytest.raises(ModelError) as err:
        build_model(cfg(model={"backbone": TINY_BACKBONE, "pretrained": str(path)}).model, num_outputs=5)
    assert str(path) in str(err.value)
    assert not marker.exists()


# ----------------------------------------------------------------------------------------------
# freeze_backbone
# ----------------------------------------------------------------------------------------------


def test_freeze_backbone_trains_only_the_head(cfg) -> None:
    config = cfg(model={"backbone": TINY_BACKBONE, "freeze_backbone": True}, training={"weight_decay": 0.01})
    model = build_model(config.model, num_outputs=3)
    assert head_parameter_names(model) == HEAD
    assert {n for n, p in model.named_parameters() if p.requires_grad} == HEAD

    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert any("running_mean" in k for k in before)
    optimizer = build_optimizer(model, config.training)
    set_train_mode(model, True)
    assert model.training and model.get_classifier().training
    assert not model.bn1.training

    loss = nn.functional.cross_entropy(model(_batch(4)), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    optimizer.step()

    after = model.state_dict()
    for key, value in before.items():
        if key in HEAD:
            assert not torch.equal(after[key], value), f"head {key} did not train"
        else:
            assert torch.equal(after[key], value), f"frozen backbone changed: {key}"

    set_train_mode(model, False)
    assert not any(m.training for m in model.modules())


def test_plain_train_mode_would_move_batchnorm_stats(cfg) -> None:
    """The contrast that makes the frozen-backbone test meaningful: model.train() updates BN stats."""
    model = build_model(cfg(model={"backbone": TINY_BACKBONE, "freeze_backbone": True}).model, num_outputs=3)
    before = model.bn1.running_mean.clone()
    model.train()
    with torch.no_grad():
        model(_batch(4))
    assert not torch.equal(model.bn1.running_mean, before)


def test_unfrozen_model_trains_batchnorm_normally(cfg) -> None:
    model = build_model(cfg(model={"backbone": TINY_BACKBONE}).model, num_outputs=3)
    assert all(p.requires_grad for p in model.parameters())
    set_train_mode(model, True)
    assert all(m.training for m in model.modules())


# ----------------------------------------------------------------------------------------------
# normalization
# ----------------------------------------------------------------------------------------------


def test_normalization_defaults_come_from_the_backbone(cfg) -> None:
    config = cfg(model={"backbone": "tf_efficientnet_lite0"})
    model = build_model(config.model, num_outputs=2)  # pretrained=False: only its cfg is read
    assert normalization(model) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))

    config = cfg(model={"backbone": "test_efficientnet"})
    model = build_model(config.model, num_outputs=2)
    expected = timm.models.get_pretrained_cfg("test_efficientnet")
    mean, std = normalization(model)
    assert mean == pytest.approx(expected.mean) and std == pytest.approx(expected.std)
    assert mean == pytest.approx((0.485, 0.456, 0.406))


def test_normalization_config_overrides_the_backbone(cfg) -> None:
    config = cfg(model={"backbone": "tf_efficientnet_lite0"}, data={"mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6]})
    model = build_model(config.model, num_outputs=2)
    mean, std = normalization(model, mean=config.data.mean, std=config.data.std)
    assert mean == pytest.approx((0.1, 0.2, 0.3)) and std == pytest.approx((0.4, 0.5, 0.6))
    assert all(isinstance(v, float) for v in mean + std)


def test_normalization_without_a_pretrained_cfg_uses_imagenet(cfg) -> None:
    assert normalization(nn.Linear(2, 2)) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_freeze_backbone_with_a_distilled_two_headed_model(cfg, tmp_path) -> None:
    """Some timm models (distilled DeiT, LeViT, EfficientFormer) return a (head, head_dist) tuple."""
    backbone = "efficientformerv2_s0"
    source = timm.create_model(backbone, num_classes=1000).state_dict()
    path = _write_pt(source, tmp_path / "eff2.pt")
    config = cfg(model={"backbone": backbone, "freeze_backbone": True, "pretrained": str(path)})
    model = build_model(config.model, num_outputs=4)
    heads = {"head.weight", "head.bias", "head_dist.weight", "head_dist.bias"}
    assert head_parameter_names(model) == heads
    assert {n for n, p in model.named_parameters() if p.requires_grad} == heads
    assert torch.equal(model.state_dict()["stem.conv1.conv.weight"], source["stem.conv1.conv.weight"])
    set_train_mode(model, True)
    assert model.head.training and model.head_dist.training
    assert not model.stem.training and not model.norm.training


def test_channels_last_auto_picks_batchnorm_cnns_on_cpu_and_everything_on_cuda():
    import timm
    import torch

    from plantpheno.models import input_format, to_channels_last, wants_channels_last

    cpu, cuda, mps = torch.device("cpu"), torch.device("cuda"), torch.device("mps")
    resnet, convnext, vit = (timm.create_model(n) for n in ("test_resnet", "test_convnext", "test_vit"))
    assert wants_channels_last("auto", cpu, resnet)  # BatchNorm CNN: oneDNN's NHWC kernels are faster
    assert not wants_channels_last("auto", cpu, convnext)  # LayerNorm over channels: no gain measured
    assert not wants_channels_last("auto", cpu, vit)
    assert wants_channels_last("auto", cuda, convnext) and not wants_channels_last("auto", mps, resnet)
    assert wants_channels_last("on", cpu, vit) and not wants_channels_last("off", cuda, resnet)
    assert input_format(resnet) == torch.contiguous_format
    to_channels_last(resnet)
    assert input_format(resnet) == torch.channels_last
    assert resnet.conv1[0].weight.is_contiguous(memory_format=torch.channels_last)
