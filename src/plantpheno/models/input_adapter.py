"""``model.input_adapter``: the first convolution of an RGB network, widened to the bands of ``data.bands``.

Pretrained weights expect red, green and blue; multispectral data has other bands, more of them, or the same ones
in another order. Three ways to fill the first layer's new weights:

* ``mean``: the pretrained filter of each band named red, green or blue is copied onto the band of that
  name, wherever it sits (bands are matched by name, never by position); every other band gets the mean of the
  RGB filters (what a grey-level detector looks like). Then all filters are scaled together so that the layer's
  output keeps the variance it had on the RGB input it was trained on: the layers after it see activations of the
  scale they were trained on. Each band is standardised (standard deviation 1), but the pretrained network saw
  ImageNet's pixels (standard deviation about 0.226 of the range) through its own normalisation: with timm's
  ImageNet ``std`` an input of standard deviation about 1, with the TF EfficientNet-Lite's ``std`` 0.5 one of about
  0.45 (:func:`pretrained_input_std`). With independent bands the variance is then the sum over the bands of the
  squared weights times the band's input variance, so the target is ``sum(w_rgb**2 * s**2)`` for the standard
  deviations ``s`` the network saw, and the adapted weights (on unit-variance bands) are scaled to it. Assuming
  ``s = 1`` instead fed the bundled Lite0 stem about 2.2 times the contrast it knows and saturated its ReLU6
  (``benchmarks/adapter_diagnose.py``).
* ``nearest`` (default): as ``mean``, but a band of a known wavelength outside the visible starts from the pretrained
  filter of the visible band next to it in the spectrum: ``nir``, ``red_edge``, ``swir`` and ``thermal`` (longer
  than red) from red's, ``uv`` and ``coastal`` (shorter than blue) from blue's; other bands (derived ones, unknown
  names) from the mean. The mean filter adds a band to every output in the direction of the RGB brightness, so a
  dark patch in NIR looks to the layer exactly like a dark spot in the visible bands; red's filter is
  colour-opponent in many outputs and keeps them apart (``benchmarks/adapter_diagnose.py``). The default by a rule
  fixed before the run, on validation figures: it starts better than random beyond the paired interval and trains,
  in the ``classify`` recipe, no worse than ``tile``; ``mean`` did neither (``benchmarks/adapter.py``,
  ``docs/guide/bands.md``).
* ``tile``: timm's ``adapt_input_conv``: the RGB filters repeated over the bands by position and scaled by 3 / N.
  It puts the red filter on whatever band comes first.
* ``random``: a fresh initialisation of the layer (PyTorch's default for a convolution).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import nn

from plantpheno.errors import ModelError

RGB = ("red", "green", "blue")
IMAGENET_PIXEL_STD = (0.229, 0.224, 0.225)  # of ImageNet's pixels in 0-1, per colour (timm's IMAGENET_DEFAULT_STD)
METHODS = ("mean", "nearest", "tile", "random")  # model.input_adapter's choices
# ``nearest``: the visible band whose filter a band outside the visible starts from (its neighbour in the spectrum)
NEAREST_VISIBLE = {**dict.fromkeys(("nir", "red_edge", "rededge", "swir", "swir1", "swir2", "thermal", "lwir", "tir"),
                                   "red"),
                   **dict.fromkeys(("uv", "coastal", "aerosol"), "blue")}


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    """The name and module of the convolution that sees the input (timm's ``pretrained_cfg['first_conv']``, else
    the first ``Conv2d`` with 3 input channels)."""
    name = (getattr(model, "pretrained_cfg", None) or {}).get("first_conv")
    if isinstance(name, (list, tuple)):
        name = name[0] if name else None
    if name:
        try:
            module = model.get_submodule(name)
        except AttributeError:
            module = None
        if isinstance(module, nn.Conv2d):
            return name, module
    for found, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3:
            return found, module
    raise ModelError(f"{type(model).__name__}: no first convolution with 3 input channels found; data.bands needs "
                     f"a convolutional stem")


def pretrained_input_std(model: nn.Module) -> tuple[float, float, float]:
    """The standard deviation of red, green and blue as the pretrained ``model`` saw them: ImageNet's pixel standard
    deviation over the normalisation ``std`` of its ``pretrained_cfg`` (timm's ImageNet default when it has none)."""
    std = (getattr(model, "pretrained_cfg", None) or {}).get("std") or IMAGENET_PIXEL_STD
    if len(std) != 3:
        return (1.0, 1.0, 1.0)
    return tuple(float(p) / float(s) for p, s in zip(IMAGENET_PIXEL_STD, std))  # type: ignore[return-value]


def adapted_weight(weight: torch.Tensor, names: Sequence[str], method: str,
                   input_std: Sequence[float] = (1.0, 1.0, 1.0)) -> torch.Tensor:
    """``weight`` ``(O, 3, kh, kw)`` of an RGB layer -> ``(O, len(names), kh, kw)`` by ``method`` (``mean``,
    ``nearest`` or ``tile``; see the module's docstring). ``input_std``: the standard deviation of red, green and
    blue in the input the RGB layer was trained on (:func:`pretrained_input_std`); ``mean`` and ``nearest`` scale
    to the output variance of that input, the new layer's bands being standardised."""
    out_channels, _, kh, kw = weight.shape
    count = len(names)
    if method == "tile":
        repeat = math.ceil(count / 3)
        return weight.repeat(1, repeat, 1, 1)[:, :count] * (3 / count)
    if method not in ("mean", "nearest"):
        raise ValueError(f"unknown input adapter {method!r}")
    mean = weight.mean(dim=1)
    near = NEAREST_VISIBLE if method == "nearest" else {}
    new = torch.stack([weight[:, RGB.index(n)] if n in RGB else weight[:, RGB.index(near[n])] if n in near else mean
                       for n in names], dim=1)
    seen = torch.tensor([float(v) for v in input_std], dtype=weight.dtype, device=weight.device).view(1, 3, 1, 1)
    before, after = float((weight * seen).pow(2).sum()), float(new.pow(2).sum())
    return new * math.sqrt(before / after) if after > 0 else new


def adapt_input(model: nn.Module, names: Sequence[str], method: str) -> str:
    """Replace ``model``'s first convolution by one taking ``len(names)`` bands (weights by ``method``: mean,
    nearest, tile or random), in place; returns a one-line description for the run's log."""
    names = [n.lower() for n in names]
    where, conv = first_conv(model)
    # a copy keeps the layer's class and settings (timm's same-padding Conv2dSame has its own forward)
    new = copy.deepcopy(conv)
    new.in_channels = len(names)
    with torch.no_grad():
        weight = conv.weight.detach()
        new.weight = nn.Parameter(torch.empty(weight.shape[0], len(names) // conv.groups, *weight.shape[2:],
                                              dtype=weight.dtype, device=weight.device))
        if method == "random":
            nn.Conv2d.reset_parameters(new)
        else:
            new.weight.copy_(adapted_weight(weight, names, method, pretrained_input_std(model)))
    parent, _, leaf = where.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)
    if hasattr(model, "pretrained_cfg") and isinstance(model.pretrained_cfg, dict):
        model.pretrained_cfg = {**model.pretrained_cfg, "num_chans": len(names)}  # the input it now takes
    copied = [n for n in names if n in RGB]
    if method in ("mean", "nearest"):
        near = NEAREST_VISIBLE if method == "nearest" else {}
        nearest = [f"{n} from {near[n]}'s" for n in names if n in near]
        others = [n for n in names if n not in RGB and n not in near]
        how = (f"{', '.join(copied) or 'no band'} from the pretrained filter of that name; "
               + "".join(f"{n}; " for n in nearest)
               + f"{', '.join(others) or 'no band'} from their mean; scaled to the output variance of the pretrained "
               f"input (RGB std {', '.join(f'{v:.2f}' for v in pretrained_input_std(model))})")
    elif method == "tile":
        how = "the RGB filters repeated over the bands by position, scaled by 3/N (timm)"
    else:
        how = "randomly initialised"
    return f"model.input_adapter={method}: first layer {where} takes {len(names)} bands ({', '.join(names)}): {how}"
