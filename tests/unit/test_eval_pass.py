"""One backbone pass a split (evaluation.one_pass): the outputs and the pooled features of one pass are the model's
outputs and ``pooled_features``' (the run-level figures and pass counts: tests/integration/test_one_pass_figures.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import TINY_BACKBONE
from plantpheno.evaluation.one_pass import feature_parts, outputs_and_features
from plantpheno.evaluation.tta import tta_outputs


@pytest.mark.parametrize("backbone", [TINY_BACKBONE, "test_efficientnet", "test_vit", "test_convnext"])
@pytest.mark.parametrize("mode", ["none", "flips"])
def test_one_pass_gives_the_models_outputs_and_its_pooled_features(backbone, mode):
    import timm

    torch.manual_seed(0)
    model = timm.create_model(backbone, num_classes=5).eval()
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        raw, plain, features = outputs_and_features(model, images, mode, feature_parts(model))
        want_raw, want_plain = tta_outputs(model, images, mode)
        want_features = model.forward_head(model.forward_features(images), pre_logits=True)
    assert features is not None and features.shape == (3, model.num_features)
    torch.testing.assert_close(features, want_features, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(plain, want_plain, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(raw, want_raw, rtol=1e-5, atol=1e-6)


def test_a_module_that_is_not_a_timm_network_keeps_its_outputs_without_features():
    head = nn.Linear(4, 3)
    assert feature_parts(head) is None
    x = torch.randn(2, 4)
    raw, plain, features = outputs_and_features(head, x, "none", feature_parts(head))
    assert features is None and torch.equal(raw, head(x)) and torch.equal(plain, raw)
