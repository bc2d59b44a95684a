"""Losses, optimizers and learning-rate schedules by name."""

from __future__ import annotations

import math
from typing import get_args

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau, StepLR

from conftest import TINY_BACKBONE
from plantpheno.config import TrainingConfig
from plantpheno.training.losses import LOSSES, FocalLoss, balanced_class_weights, build_loss
from plantpheno.training.optim import build_optimizer, build_scheduler, cosine_with_warmup, steps_per_batch

OPTIMIZERS = get_args(TrainingConfig.model_fields["optimizer"].annotation)
SCHEDULERS = get_args(TrainingConfig.model_fields["scheduler"].annotation)
LOSS_NAMES = get_args(TrainingConfig.model_fields["loss"].annotation)
CLASSIFICATION_LOSSES = ("cross_entropy", "focal")


def _loss(config, **kwargs):
    """build_loss with the training section and task of ``config``."""
    return build_loss(config.training, task=config.task, **kwargs)


def _logits_and_targets(n: int = 12, k: int = 4):
    g = torch.Generator().manual_seed(3)
    logits = (3 * torch.randn(n, k, generator=g)).requires_grad_()
    targets = torch.tensor([i % k for i in range(n)])[torch.randperm(n, generator=g)]
    return logits, targets


TRAIN_TARGETS = [0, 0, 0, 0, 0, 0, 1, 1, 2]  # class 3 absent


# ----------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------


def test_every_schema_loss_is_registered() -> None:
    assert set(LOSS_NAMES) - {"auto"} == set(LOSSES)


@pytest.mark.parametrize("class_weights", ["none", "balanced"])
@pytest.mark.parametrize("name", list(LOSSES))
def test_every_loss_gives_a_finite_scalar_with_gradient(cfg, name, class_weights) -> None:
    classification = name in CLASSIFICATION_LOSSES
    config = cfg(task="classification" if classification else "regression",
                 training={"loss": name, "class_weights": class_weights, "label_smoothing": 0.0})
    assert config.loss_name == name
    if classification:
        outputs, targets = _logits_and_targets()
        loss_fn = _loss(config, train_targets=TRAIN_TARGETS + [3], num_classes=4)
    else:
        g = torch.Generator().manual_seed(4)
        outputs = torch.randn(12, generator=g).requires_grad_()
        targets = torch.randn(12, generator=g) * 3
        loss_fn = _loss(config, train_targets=targets.tolist(), num_classes=1)
    loss = loss_fn(outputs, targets)
    assert loss.ndim == 0 and torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert outputs.grad is not None and torch.isfinite(outputs.grad).all() and outputs.grad.abs().sum() > 0


@pytest.mark.parametrize(("task", "expected"), [("classification", nn.CrossEntropyLoss), ("regression", nn.MSELoss)])
def test_auto_loss_follows_the_task(cfg, task, expected) -> None:
    config = cfg(task=task)
    assert type(_loss(config, train_targets=[0, 1], num_classes=2)) is expected


def test_regression_ignores_class_weights(cfg) -> None:
    config = cfg(task="regression", training={"class_weights": "balanced"})
    loss_fn = _loss(config, train_targets=[0.5, 2.7, 9.1], num_classes=1)
    assert isinstance(loss_fn, nn.MSELoss)


def test_balanced_class_weights_values() -> None:
    weights = balanced_class_weights(TRAIN_TARGETS, 4)
    n, k = len(TRAIN_TARGETS), 4
    assert weights.tolist() == pytest.approx([n / (k * 6), n / (k * 2), n / (k * 1), 0.0])
    assert weights.dtype == torch.float32
    assert balanced_class_weights([0, 1, 0, 1], 2).tolist() == [1.0, 1.0]  # balanced data: all ones


@pytest.mark.parametrize("class_weights", ["none", "balanced"])
def test_focal_with_gamma_zero_is_cross_entropy(cfg, class_weights) -> None:
    focal = _loss(cfg(training={"loss": "focal", "focal_gamma": 0.0, "class_weights": class_weights}),
                       train_targets=TRAIN_TARGETS, num_classes=4)
    ce = _loss(cfg(training={"loss": "cross_entropy", "class_weights": class_weights}),
                    train_targets=TRAIN_TARGETS, num_classes=4)
    assert isinstance(focal, FocalLoss)
    if class_weights == "balanced":
        assert torch.equal(focal.weight, ce.weight)
        assert focal.weight[3] == 0
    else:
        assert focal.weight is None and ce.weight is None
    logits, targets = _logits_and_targets()
    assert focal(logits, targets).item() == pytest.approx(ce(logits, targets).item(), rel=1e-5)
    weight = balanced_class_weights(TRAIN_TARGETS, 4) if class_weights == "balanced" else None
    assert focal(logits, targets).item() == pytest.approx(F.cross_entropy(logits, targets, weight=weight).item(),
                                                          rel=1e-5)


def test_focal_gamma_matches_the_formula_and_down_weights_easy_examples(cfg) -> None:
    focal = _loss(cfg(training={"loss": "focal", "focal_gamma": 2.0}), train_targets=[0], num_classes=4)
    logits, targets = _logits_and_targets()
    p_t = F.softmax(logits, dim=1).gather(1, targets[:, None]).squeeze(1)
    expected = (-(1 - p_t) ** 2 * torch.log(p_t)).mean()
    assert focal(logits, targets).item() == pytest.approx(expected.item(), rel=1e-5)
    assert focal(logits, targets) < F.cross_entropy(logits, targets)


def test_label_smoothing_changes_the_loss(cfg) -> None:
    logits, targets = _logits_and_targets()
    plain = _loss(cfg(training={"label_smoothing": 0.0}), train_targets=[0], num_classes=4)
    smooth = _loss(cfg(training={"label_smoothing": 0.2}), train_targets=[0], num_classes=4)
    assert smooth(logits, targets).item() != pytest.approx(plain(logits, targets).item(), rel=1e-3)
    assert smooth(logits, targets).item() == pytest.approx(
        F.cross_entropy(logits, targets, label_smoothing=0.2).item(), rel=1e-5)


def test_huber_delta_is_used(cfg) -> None:
    config = cfg(task="regression", training={"loss": "huber", "huber_delta": 0.3})
    out, target = torch.tensor([0.0, 1.0, 5.0]), torch.tensor([0.1, 0.0, 0.0])
    loss = _loss(config, train_targets=[0.0], num_classes=1)(out, target)
    assert loss.item() == pytest.approx(F.huber_loss(out, target, delta=0.3).item())
    assert loss.item() != pytest.approx(F.huber_loss(out, target, delta=1.0).item())


# ----------------------------------------------------------------------------------------------
# Optimizers
# ----------------------------------------------------------------------------------------------


def _model(config) -> nn.Module:
    from plantpheno.models import build_model

    torch.manual_seed(0)
    return build_model(config.model, num_outputs=3)


def _train_step(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    optimizer.zero_grad()
    F.cross_entropy(model(x), torch.tensor([0, 1, 2, 0])).backward()
    optimizer.step()


EXPECTED_CLASS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}


def test_every_schema_optimizer_is_tested() -> None:
    assert set(OPTIMIZERS) == set(EXPECTED_CLASS)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_builds_and_steps(cfg, name) -> None:
    config = cfg(training={"optimizer": name, "learning_rate": 0.01, "weight_decay": 0.05, "momentum": 0.8})
    model = _model(config)
    optimizer = build_optimizer(model, config.training)
    assert type(optimizer) is EXPECTED_CLASS[name]
    assert all(g["lr"] == 0.01 for g in optimizer.param_groups)
    if name == "sgd":
        assert all(g["momentum"] == 0.8 and g["nesterov"] for g in optimizer.param_groups)
    before = {k: v.clone() for k, v in model.named_parameters()}
    _train_step(model, optimizer)
    changed = [k for k, v in model.named_parameters() if not torch.equal(v, before[k])]
    assert "fc.weight" in changed and "conv1.0.weight" in changed


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_the_multi_tensor_update_is_the_per_parameter_loop_bit_for_bit(cfg, name) -> None:
    """build_optimizer asks for foreach (faster on CPU); torch's default there is the per-parameter loop. Three
    steps of each from the same start give the same parameters exactly, so the choice changes no result."""
    config = cfg(training={"optimizer": name, "learning_rate": 0.01, "weight_decay": 0.05, "momentum": 0.8})
    fast = _model(config)
    optimizer = build_optimizer(fast, config.training)
    assert all(g["foreach"] for g in optimizer.param_groups)
    loop = _model(config)
    reference = build_optimizer(loop, config.training)
    for group in reference.param_groups:
        group["foreach"] = False
    for _ in range(3):
        _train_step(fast, optimizer)
        _train_step(loop, reference)
    for (key, a), b in zip(fast.named_parameters(), loop.parameters(), strict=True):
        assert torch.equal(a, b), key


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_biases_and_norm_parameters_get_no_weight_decay(cfg, name) -> None:
    config = cfg(training={"optimizer": name, "weight_decay": 0.05})
    model = _model(config)
    optimizer = build_optimizer(model, config.training)
    decay_of = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert set(decay_of) == {id(p) for p in named.values()}  # every parameter once
    for name_, param in named.items():
        expected = 0.0 if param.ndim <= 1 or name_.endswith(".bias") else 0.05
        assert decay_of[id(param)] == expected, name_
    assert decay_of[id(named["bn1.weight"])] == 0.0 and decay_of[id(named["fc.bias"])] == 0.0
    assert decay_of[id(named["fc.weight"])] == 0.05


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_frozen_parameters_are_not_optimized(cfg, name, weight_decay) -> None:
    config = cfg(model={"backbone": TINY_BACKBONE, "freeze_backbone": True},
                 training={"optimizer": name, "weight_decay": weight_decay})
    model = _model(config)
    optimizer = build_optimizer(model, config.training)
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert in_optimizer == {id(p) for p in model.parameters() if p.requires_grad}
    assert {n for n, p in model.named_parameters() if id(p) in in_optimizer} == {"fc.weight", "fc.bias"}


# ----------------------------------------------------------------------------------------------
# Schedules
# ----------------------------------------------------------------------------------------------


def test_cosine_with_warmup_shape() -> None:
    warmup, total = 10, 100
    f = [cosine_with_warmup(s, warmup_steps=warmup, total_steps=total) for s in range(total + 1)]
    assert 0 < f[0] <= 0.1 + 1e-9
    assert all(a < b for a, b in zip(f[:warmup], f[1:warmup]))  # linear warmup rises
    assert f[warmup - 1] == pytest.approx(1.0) and f[warmup] == pytest.approx(1.0)
    after = f[warmup:]
    assert all(b < a for a, b in zip(after, after[1:]))  # strictly decreasing after warmup
    assert f[total] == pytest.approx(0.0, abs=1e-12)
    assert f[-2] < 0.01
    mid = warmup + (total - warmup) // 2
    assert f[mid] == pytest.approx(0.5, abs=1e-9)
    assert cosine_with_warmup(total + 50, warmup_steps=warmup, total_steps=total) == pytest.approx(0.0, abs=1e-12)


def test_cosine_without_warmup_starts_at_one() -> None:
    assert cosine_with_warmup(0, warmup_steps=0, total_steps=10) == 1.0
    assert cosine_with_warmup(10, warmup_steps=0, total_steps=10) == pytest.approx(0.0, abs=1e-12)


def test_every_schema_scheduler_is_tested() -> None:
    assert set(SCHEDULERS) == {"none", "cosine", "step", "plateau"}


def _optimizer(config):
    model = _model(config)
    return model, build_optimizer(model, config.training)


def _lr(optimizer) -> float:
    return optimizer.param_groups[0]["lr"]


@pytest.mark.parametrize("name", SCHEDULERS)
def test_build_scheduler_for_every_name(cfg, name) -> None:
    config = cfg(training={"scheduler": name, "learning_rate": 0.1, "epochs": 3, "warmup_epochs": 0.5,
                           "step_size": 2, "gamma": 0.5, "plateau_patience": 1, "monitor": "val/loss"})
    model, optimizer = _optimizer(config)
    scheduler = build_scheduler(optimizer, config.training, steps_per_epoch=4, monitor_mode=config.monitor[1])
    assert steps_per_batch(config.training) == (name == "cosine")
    if name == "none":
        assert scheduler is None
        return
    if name == "cosine":
        assert isinstance(scheduler, LambdaLR)
        lrs = []
        for _ in range(12):  # 3 epochs x 4 steps, warmup 2 steps
            lrs.append(_lr(optimizer))
            optimizer.step()
            scheduler.step()
        expected = [0.1 * cosine_with_warmup(s, warmup_steps=2, total_steps=12) for s in range(12)]
        assert lrs == pytest.approx(expected)
        assert lrs[1] == pytest.approx(0.1) and lrs[0] == pytest.approx(0.05)
        assert _lr(optimizer) == pytest.approx(0.0, abs=1e-12)
    elif name == "step":
        assert isinstance(scheduler, StepLR)
        lrs = []
        for _ in range(5):
            lrs.append(_lr(optimizer))
            optimizer.step()
            scheduler.step()
        assert lrs == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])
    else:
        assert isinstance(scheduler, ReduceLROnPlateau)
        assert scheduler.mode == "min"  # val/loss: lower is better
        for loss in (1.0, 0.5, 0.6, 0.7):  # no improvement for 2 epochs > patience 1
            optimizer.step()
            scheduler.step(loss)
        assert _lr(optimizer) == pytest.approx(0.05)


def test_plateau_mode_follows_the_monitored_metric(cfg) -> None:
    config = cfg(training={"scheduler": "plateau"})  # auto monitor: val/macro_f1, higher is better
    _, optimizer = _optimizer(config)
    assert build_scheduler(optimizer, config.training, steps_per_epoch=4, monitor_mode=config.monitor[1]).mode == "max"


def test_cosine_scheduler_state_round_trips_through_weights_only_load(cfg, tmp_path) -> None:
    config = cfg(training={"scheduler": "cosine", "learning_rate": 0.02, "epochs": 3, "warmup_epochs": 1})
    model, optimizer = _optimizer(config)
    # 3 warmup + 6 cosine steps
    scheduler = build_scheduler(optimizer, config.training, steps_per_epoch=3, monitor_mode=config.monitor[1])
    for _ in range(4):
        _train_step(model, optimizer)
        scheduler.step()
    path = tmp_path / "sched.pt"
    torch.save({"scheduler": scheduler.state_dict(), "optimizer": optimizer.state_dict(),
                "model": model.state_dict()}, path)
    saved = torch.load(path, weights_only=True)

    # Resume order as in training.assembly._build_trainer: build both, then load optimizer, then scheduler state.
    model2, optimizer2 = _optimizer(config)
    scheduler2 = build_scheduler(optimizer2, config.training, steps_per_epoch=3, monitor_mode=config.monitor[1])
    model2.load_state_dict(saved["model"])
    optimizer2.load_state_dict(saved["optimizer"])
    scheduler2.load_state_dict(saved["scheduler"])
    assert scheduler2.last_epoch == 4
    assert _lr(optimizer2) == _lr(optimizer)

    original, resumed = [], []
    for _ in range(5):
        _train_step(model, optimizer)
        scheduler.step()
        original.append(scheduler.get_last_lr())
        _train_step(model2, optimizer2)
        scheduler2.step()
        resumed.append(scheduler2.get_last_lr())
    assert resumed == original
    assert original[-1][0] == pytest.approx(0.0, abs=1e-12)
    assert math.isclose(_lr(optimizer2), _lr(optimizer))
    for (k, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), k


def test_weight_decay_grouping_for_a_vit_backbone(cfg) -> None:
    """Grouping works for any timm backbone, not only the tiny ResNet (LayerNorm params, no decay)."""
    config = cfg(model={"backbone": "test_vit"}, training={"weight_decay": 0.05})
    model = timm.create_model("test_vit", num_classes=3)
    optimizer = build_optimizer(model, config.training)
    decay_of = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    norms = [p for n, p in model.named_parameters() if ".norm" in n or n.startswith("norm")]
    assert norms and all(decay_of[id(p)] == 0.0 for p in norms)
