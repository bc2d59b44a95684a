"""Test-time augmentation: the model sees each image in several orientations and its logits are averaged.

Leaves and top-down rosettes have no "up", so flips and 90-degree turns are views of the same plant.
``flips`` uses the identity, the horizontal and vertical flips and their product (a half turn);
``d4`` uses all eight symmetries of the square (4 turns, each also mirrored). Images are square
(evaluation centre-crops them), so every view has the input's shape. Averaging happens on the raw
outputs (logits, or the standardised trait), before softmax or rescaling.
"""

from __future__ import annotations

import torch
from torch import nn

VIEWS: dict[str, tuple[str, ...]] = {
    "none": ("identity",),
    "flips": ("identity", "hflip", "vflip", "rot180"),
    "d4": ("identity", "rot90", "rot180", "rot270", "hflip", "vflip", "transpose", "antitranspose"),
}


def view(images: torch.Tensor, name: str) -> torch.Tensor:
    """One view of a batch ``(N, C, H, W)`` of square images."""
    if name == "identity":
        return images
    if name == "hflip":
        return images.flip(-1)
    if name == "vflip":
        return images.flip(-2)
    if name.startswith("rot"):
        return torch.rot90(images, int(name[3:]) // 90, dims=(-2, -1))
    if name == "transpose":
        return images.transpose(-2, -1)
    if name == "antitranspose":
        return torch.rot90(images, 2, dims=(-2, -1)).transpose(-2, -1)
    raise ValueError(f"unknown view {name!r}; known: {', '.join(VIEWS['d4'])}")


def views(mode: str) -> tuple[str, ...]:
    try:
        return VIEWS[mode]
    except KeyError:
        raise ValueError(f"unknown TTA mode {mode!r}; known: {', '.join(VIEWS)}") from None


def tta_outputs(model: nn.Module, images: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean of the raw outputs over the views, raw outputs of the identity view)``, as float32."""
    names = views(mode)
    plain = model(images).float()
    if len(names) == 1:
        return plain, plain
    total = plain.clone()
    for name in names[1:]:
        total += model(view(images, name)).float()
    return total / len(names), plain


class TTAModel(nn.Module):
    """A network that averages its raw outputs over the views of ``mode`` (for predict and exports)."""

    def __init__(self, model: nn.Module, mode: str) -> None:
        super().__init__()
        self.model, self.names = model, views(mode)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        total = self.model(images)
        for name in self.names[1:]:
            total = total + self.model(view(images, name))
        return total / len(self.names)
