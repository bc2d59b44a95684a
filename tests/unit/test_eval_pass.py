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


def test_the_detector_reuses_a_splits_features_only_when_they_are_the_evaluation_pass_over_all_of_it():
    from types import SimpleNamespace

    import numpy as np

    from plantpheno.evaluation.inference import Predictions
    from plantpheno.training.unknowns import kept_features, kept_split

    prepared = SimpleNamespace(splits={name: [SimpleNamespace(path=f"{name}{i}.jpg") for i in range(4)]
                                       for name in ("train", "val", "test")})
    whole = Predictions(np.zeros(4), np.zeros((4, 3)), None, features=np.ones((4, 8), np.float32))
    shard = Predictions(np.zeros(2), np.zeros((2, 3)), None, features=np.ones((2, 8), np.float32))
    plain = Predictions(np.zeros(4), np.zeros((4, 3)), None)  # a model that gave no features (or autocast)
    passes = {"test": whole, "val": shard, "train": whole}
    assert kept_features(passes, prepared, "test") is whole.features
    assert kept_split(passes, prepared, "test")[0] == [f"test{i}.jpg" for i in range(4)]
    assert kept_features(passes, prepared, "val") is None  # a DDP shard: the detector passes the whole split
    assert kept_features(passes, prepared, "train") is None  # augmented and shuffled: never the detector's input
    assert kept_features({"test": plain}, prepared, "test") is None
    assert kept_features(None, prepared, "test") is None and kept_split(None, prepared, "test") is None


def test_features_are_kept_only_outside_autocast():
    """Under autocast (CUDA mixed precision) the predictions' pass runs in bfloat16/float16 while the detector was
    fitted on float32 features: the evaluation then keeps the second, float32 pass."""
    import timm
    from torch.utils.data import DataLoader, TensorDataset

    from plantpheno.evaluation.inference import predict
    from plantpheno.training.objectives import Classification

    model = timm.create_model(TINY_BACKBONE, num_classes=3).eval()
    loader = DataLoader(TensorDataset(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])), batch_size=2)
    task, cpu = Classification(["a", "b", "c"]), torch.device("cpu")
    kept = predict(model, loader, task=task, device=cpu, features=True)
    assert kept.features is not None and kept.features.shape == (4, model.num_features)
    assert predict(model, loader, task=task, device=cpu).features is None
    assert predict(model, loader, task=task, device=cpu, features=True, amp_dtype=torch.bfloat16).features is None
