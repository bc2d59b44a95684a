"""Test-time augmentation views and Grad-CAM's target layers on timm CNNs and ViTs."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from plantpheno.evaluation.gradcam import grad_cam, overlay, target_layer
from plantpheno.evaluation.tta import VIEWS, TTAModel, tta_outputs, view


def test_d4_views_are_the_eight_distinct_symmetries_of_the_square():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    seen = {tuple(view(x, name).flatten().tolist()) for name in VIEWS["d4"]}
    assert len(seen) == 8
    for name in VIEWS["d4"]:  # each view is a permutation of the same pixels
        assert sorted(view(x, name).flatten().tolist()) == list(range(16))
    assert set(VIEWS["flips"]) <= set(VIEWS["d4"])


class _Corner(nn.Module):
    """Output = the top-left pixel of each channel: changes with every view."""

    def forward(self, x):
        return x[:, :, 0, 0]


@pytest.mark.parametrize("mode", ["none", "flips", "d4"])
def test_tta_averages_raw_outputs_over_the_views(mode):
    x = torch.randn(2, 3, 5, 5)
    mean, plain = tta_outputs(_Corner(), x, mode)
    expected = torch.stack([view(x, v)[:, :, 0, 0] for v in VIEWS[mode]]).mean(0)
    torch.testing.assert_close(mean, expected)
    torch.testing.assert_close(plain, x[:, :, 0, 0])
    torch.testing.assert_close(TTAModel(_Corner(), mode)(x), expected)


def test_unknown_tta_mode_is_named():
    with pytest.raises(ValueError, match="unknown TTA mode 'spin'"):
        tta_outputs(_Corner(), torch.zeros(1, 3, 4, 4), "spin")


@pytest.mark.parametrize("backbone,layer,size", [
    ("resnet10t", "layer4", 64), ("tf_efficientnet_lite0", "blocks.6", 64), ("convnext_atto", "stages.3", 64),
    ("mobilenetv3_small_100", "blocks.5", 64), ("vit_tiny_patch16_224", "blocks.11", 224),
])
def test_target_layer_comes_from_feature_info_and_maps_cover_the_image(backbone, layer, size):
    torch.manual_seed(0)
    model = timm.create_model(backbone, pretrained=False, num_classes=3).eval()
    assert target_layer(model)[0] == layer
    cams = grad_cam(model, torch.randn(2, 3, size, size), torch.tensor([0, 2]))
    assert cams.shape == (2, size, size)
    assert cams.min() >= 0 and cams.max() <= 1
    assert cams.max() > 0  # random weights still give some positive evidence somewhere


def test_grad_cam_explains_a_one_output_model_and_restores_training_mode():
    model = timm.create_model("resnet10t", pretrained=False, num_classes=1)
    model.train()
    cams = grad_cam(model, torch.randn(1, 3, 64, 64))
    assert cams.shape == (1, 64, 64) and model.training


def test_grad_cam_finds_the_only_region_a_model_can_use():
    """A CNN whose class-1 logit counts bright pixels in its feature map: the map lights up where they are."""

    class Bright(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Conv2d(3, 4, 3, padding=1)
            with torch.no_grad():
                self.layer.weight.zero_()
                self.layer.bias.zero_()
                self.layer.weight[0, :, 1, 1] = 1.0
            self.feature_info = [{"module": "layer", "num_chs": 4, "reduction": 1}]

        def forward(self, x):
            f = torch.relu(self.layer(x))
            return torch.stack([f[:, 1].mean((1, 2)), f[:, 0].mean((1, 2))], dim=1)

    x = torch.zeros(1, 3, 16, 16)
    x[:, :, 2:6, 9:13] = 1.0
    cam = grad_cam(Bright(), x, torch.tensor([1]))[0]
    assert cam[2:6, 9:13].mean() > 5 * cam[8:, :8].mean()
    pixels = (x[0].permute(1, 2, 0).numpy() * 255).astype("uint8")
    assert overlay(pixels, cam).shape == (16, 16, 3)


def test_a_model_without_feature_info_is_an_error():
    from plantpheno.errors import PlantPhenoError

    with pytest.raises(PlantPhenoError, match="no timm feature_info"):
        target_layer(nn.Linear(2, 2))
