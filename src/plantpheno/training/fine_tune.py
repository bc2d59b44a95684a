"""The fine-tune phase: after the frozen-backbone head, unfreeze the last backbone blocks and train on.

``training.fine_tune.epochs: E`` adds ``E`` epochs after ``training.epochs`` of head training (which
needs ``model.freeze_backbone: true``). The phase starts from the best head, unfreezes the last
``training.fine_tune.blocks`` of timm's coarse parameter groups of the backbone (EfficientNet stages,
ResNet layers, ViT blocks; the head stays trainable) and trains them with their own learning rate and
a fresh schedule. BatchNorm statistics stay fixed (the unfrozen blocks run in eval mode, their weights
and BN scale/shift train), as in the head phase: small plant datasets in small batches would otherwise
overwrite ImageNet's statistics with noisy ones.

With ``training.feature_cache: true`` and a backbone whose ``forward_features`` is a plain chain of
modules (timm's EfficientNet, MobileNetV3 and ResNet families; checked on a probe image), the frozen
part runs once per image: its output ("activations at the cut") is cached, the head phase pools its
features from them and the fine-tune phase trains only the blocks after the cut, so an epoch costs the
last blocks' forward and backward instead of the whole network's. Other backbones fine-tune on images.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from plantpheno.errors import ModelError
from plantpheno.models import head_parameter_names, set_train_mode

log = logging.getLogger(__name__)


def backbone_groups(model: nn.Module) -> list[list[str]]:
    """The backbone's parameter names in timm's coarse groups, input end first (the head is left out)."""
    from timm.models import group_parameters

    matcher = getattr(model, "group_matcher", None)
    if matcher is None:
        raise ModelError(f"training.fine_tune: {type(model).__name__} does not list its blocks "
                         f"(no timm group_matcher); fine-tune it with model.freeze_backbone: false instead")
    head = head_parameter_names(model)
    groups = group_parameters(model, matcher(coarse=True))
    out = [[n for n in names if n not in head] for _, names in sorted(groups.items())]
    return [names for names in out if names]


def last_groups(model: nn.Module, blocks: int) -> set[str]:
    """Parameter names of the last ``blocks`` backbone groups (what the fine-tune phase unfreezes)."""
    groups = backbone_groups(model)
    if blocks > len(groups):
        raise ModelError(f"training.fine_tune.blocks: {blocks} is more than the {len(groups)} blocks of "
                         f"{type(model).__name__}; use 1 to {len(groups)}")
    return {n for group in groups[-blocks:] for n in group}


def unfreeze_last(model: nn.Module, blocks: int) -> list[str]:
    """Make the last ``blocks`` backbone groups trainable (the head already is); returns their names."""
    names = last_groups(model, blocks)
    for name, param in model.named_parameters():
        if name in names:
            param.requires_grad_(True)
    return sorted(names)


def _flat(seq: nn.Module) -> list[nn.Module]:
    return [block for stage in seq for block in (stage if isinstance(stage, nn.Sequential) else [stage])]


def sequential_trunk(model: nn.Module, image_size: int) -> list[nn.Module] | None:
    """``forward_features`` as a chain of modules, or None where it is not one (checked on a probe image)."""
    from timm.models.efficientnet import EfficientNet
    from timm.models.mobilenetv3 import MobileNetV3
    from timm.models.resnet import ResNet

    if isinstance(model, EfficientNet):
        chain = [model.conv_stem, model.bn1, *_flat(model.blocks), model.conv_head, model.bn2]
    elif isinstance(model, MobileNetV3):
        chain = [model.conv_stem, model.bn1, *_flat(model.blocks)]
    elif isinstance(model, ResNet):
        chain = [model.conv1, model.bn1, model.act1, model.maxpool,
                 *_flat(nn.Sequential(model.layer1, model.layer2, model.layer3, model.layer4))]
    else:
        return None
    if getattr(model, "grad_checkpointing", False):
        return None
    was_training = model.training
    model.eval()
    try:
        # as many channels as the first convolution takes (data.bands widens it beyond RGB)
        channels = next((m.in_channels for m in model.modules() if isinstance(m, nn.Conv2d)), 3)
        probe = torch.rand(2, channels, image_size, image_size, generator=torch.Generator().manual_seed(0),
                           device=next(model.parameters()).device)
        with torch.no_grad():
            x = probe
            for module in chain:
                x = module(x)
            same = torch.equal(x, model.forward_features(probe))
    finally:
        model.train(was_training)
    return chain if same else None


def fine_tune_cut(model: nn.Module, blocks: int, image_size: int) -> tuple[list[nn.Module], int] | None:
    """The backbone's chain of modules and the index of the first one the fine-tune phase trains, or None
    where there is no chain (or nothing before the cut to cache)."""
    trunk = sequential_trunk(model, image_size)
    if trunk is None:
        return None
    names = last_groups(model, blocks)
    trained = {id(p) for n, p in model.named_parameters() if n in names}
    cut = next((i for i, m in enumerate(trunk) if any(id(p) in trained for p in m.parameters())), len(trunk))
    return (trunk, cut) if cut > 0 else None


class CutSuffix(nn.Module):
    """The network from the cut on: the trunk's remaining modules, then the model's own head.

    Parameters are the model's (registered once, through ``model``); ``train()`` keeps the frozen
    backbone's modules in eval mode like :func:`plantpheno.models.set_train_mode`.
    """

    def __init__(self, model: nn.Module, suffix: list[nn.Module]) -> None:
        super().__init__()
        self.model = model
        self._suffix = list(suffix)  # a plain list: the modules are already registered under `model`
        # inputs take the network's memory format (plantpheno.models.input_format)
        self.plantpheno_channels_last = getattr(model, "plantpheno_channels_last", False)

    def forward_trunk(self, x: torch.Tensor) -> torch.Tensor:
        for module in self._suffix:
            x = module(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.forward_trunk(x))

    def train(self, mode: bool = True) -> CutSuffix:
        self.training = mode
        set_train_mode(self.model, mode)
        return self


class Prefix(nn.Module):
    """The frozen trunk up to the cut (evaluated without gradients, in eval mode)."""

    def __init__(self, prefix: list[nn.Module]) -> None:
        super().__init__()
        self._prefix = list(prefix)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self._prefix:
            x = module(x)
        return x
