"""Grad-CAM (Selvaraju et al. 2017): which part of the image pushed the model towards a class (or a trait value).

Hand-written (about 60 lines) rather than the MIT ``grad-cam`` package: that package pulls in OpenCV
(``opencv-python``, tens of MB) and ``ttach`` for what is one hook, one gradient and a weighted sum
here, and it needs a hand-picked target layer per architecture, which timm already tells us.

The target layer comes from timm's ``feature_info``: its last entry is the deepest feature map (a
ResNet's ``layer4``, an EfficientNet's last block stage, a ConvNeXt's last stage, a ViT's last block),
or the deepest with at least 7 x 7 cells when small images make the last one coarser (see
:func:`target_layer`).
For CNNs the map is that module's output. Transformers give tokens ``(N, tokens, C)``; with a class
token the last block's output patch tokens no longer reach the head, so the map is taken at the
*input* of the last block (the same choice as ``grad-cam``'s ``blocks[-1].norm1`` recipe), patch tokens
only, reshaped to the patch grid.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from plantpheno.errors import PlantPhenoError

MIN_CELLS = 7  # a 224 px image through a stride-32 CNN: the classic Grad-CAM resolution


def target_layer(model: nn.Module, image_size: int | None = None) -> tuple[str, nn.Module]:
    """The name and module of the feature map that Grad-CAM explains, from timm's ``model.feature_info``.

    The deepest one, unless ``image_size`` makes it coarser than 7 x 7 cells (a 64 px image through a
    stride-32 ResNet gives 2 x 2, which cannot point at a lesion): then the deepest one with at least
    7 x 7 cells (``layer2`` at 64 px), still class-specific through the gradient that reaches it."""
    info = getattr(model, "feature_info", None)
    if not info:
        raise PlantPhenoError(f"Grad-CAM: {type(model).__name__} has no timm feature_info to choose a target layer "
                              f"from")
    entries = [dict(e) for e in info] if isinstance(info[0], dict) else [
        {"module": m, "reduction": r} for m, r in zip(info.module_name(), info.reduction())]
    chosen = entries[-1]
    if image_size is not None:
        fine = [e for e in entries if image_size / float(e.get("reduction") or 1) >= MIN_CELLS]
        if fine and image_size / float(chosen.get("reduction") or 1) < MIN_CELLS:
            chosen = fine[-1]
    name = chosen["module"]
    return name, model.get_submodule(name)


def _to_map(acts: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """Tokens ``(N, T, C)`` -> ``(N, C, h, w)`` (prefix tokens dropped); feature maps unchanged."""
    if acts.dim() == 4:
        return acts
    prefix = int(getattr(model, "num_prefix_tokens", 0))
    patches = acts[:, prefix:, :]
    grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
    h, w = (int(grid[0]), int(grid[1])) if grid else (math.isqrt(patches.shape[1]),) * 2
    return patches.transpose(1, 2).reshape(acts.shape[0], acts.shape[2], h, w)


def grad_cam(model: nn.Module, images: torch.Tensor, targets: torch.Tensor | None = None) -> np.ndarray:
    """Grad-CAM maps ``(N, H, W)`` in [0, 1] for normalised ``images`` ``(N, 3, H, W)``.

    ``targets`` are class indices (one per image) for a classifier; for a one-output model (a trait)
    the map explains the output itself (regions that raise the predicted value)."""
    _, layer = target_layer(model, images.shape[-1])
    captured: list[torch.Tensor] = []

    def keep(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        if output.dim() == 3:  # transformer tokens: the block's input (see the module docstring)
            captured.append(args[0])
            return output
        captured.append(output)
        return output.clone()  # later in-place ops must not modify the tensor we take gradients of

    handle = layer.register_forward_hook(keep)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            x = images.detach().float().requires_grad_(True)
            out = model(x).float()
            if out.shape[1] == 1:
                score = out[:, 0]
            else:
                if targets is None:
                    targets = out.argmax(dim=1)
                score = out.gather(1, targets.view(-1, 1).to(out.device))[:, 0]
            acts = captured[-1]
            grads = torch.autograd.grad(score.sum(), acts)[0]
    finally:
        handle.remove()
        model.train(was_training)
    a, g = _to_map(acts.detach(), model), _to_map(grads.detach(), model)
    cam = F.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).max(dim=1).values.clamp_min(1e-12).view(-1, 1, 1)
    return (cam / peak).clamp(0, 1).cpu().numpy()


def overlay(image: np.ndarray, cam: np.ndarray, *, alpha: float = 0.45) -> np.ndarray:
    """An RGB uint8 image with the map drawn over it in the 'jet' colours (red = most weight)."""
    from matplotlib import colormaps

    heat = colormaps["jet"](np.clip(cam, 0, 1))[..., :3] * 255.0
    return np.clip((1 - alpha) * image.astype(np.float64) + alpha * heat, 0, 255).astype(np.uint8)
