"""Batched augmentation of band images (``data.bands`` with ``data.augment.batched_bands: true``; issue 31).

The RGB path's :class:`~plantpheno.data.batch_augment.BatchAugment` draws each sample's parameters from its seed
and applies every sample's crop, rotation and flips in one ``grid_sample``; this does the same for float band
images ``(N, C, S, S)`` of any C, already clipped and standardised per band (0 is every band's training mean):

* geometry: the same parameters and the same single resampling as RGB, on all bands alike (a band never moves
  against another); pixels from outside the square are mirrored, or with ``data.resize: pad`` /
  ``keep_whole`` take the value 0, the band's mean (as the letterbox);
* brightness and contrast: drawn **per band** (a band's gain and offset follow its own sensor and light), as
  the per-image path does (:class:`~plantpheno.data.band_loaders.BandJitter`): brightness scales a band around
  its zero in the file's units, contrast around the image's mean of that band;
* saturation and hue: only when bands named ``red``, ``green`` and ``blue`` are all present. Saturation blends
  them with their mean (as the per-image path); hue turns them around the grey axis (the RGB path's YIQ
  rotation) in the file's units, so the three bands must share a scale, as one camera's do.

Values stay float32 (no 8-bit rounding: 16-bit bands keep their precision), and the result depends only on each
sample's seed, so resuming reproduces it. Batches are augmented in the loader (``data.augment.on_device`` does
not apply to bands).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from plantpheno.band_config import RGB
from plantpheno.config import AugmentConfig
from plantpheno.data.batch_augment import _DRAWS, _HUE, _SAT, NUM_PARAMS, BatchAugment, _hue_matrix, uniforms
from plantpheno.data.bands import BandNorm


class BandBatchAugment(BatchAugment):
    """:class:`BatchAugment` for standardised float band images: :meth:`params` adds per-band brightness and
    contrast factors after the RGB path's parameters; :meth:`__call__` augments ``(N, C, S, S)`` float32."""

    def __init__(self, image_size: int, augment: AugmentConfig, resize: str, names: Sequence[str],
                 norm: BandNorm) -> None:
        super().__init__(image_size, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), augment, resize)
        self._fill = torch.zeros(1, 1, 1, 1)  # outside the square: 0, every standardised band's training mean
        self.bands = len(names)
        self.mean = torch.tensor(norm.mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(norm.std, dtype=torch.float32).view(1, -1, 1, 1)
        self.offset = self.mean / self.std  # brightness scales a band around its file's zero
        self.rgb = [list(names).index(n) for n in RGB] if all(n in names for n in RGB) else None

    def params(self, seeds: Sequence[int] | np.ndarray, content: np.ndarray | None = None) -> np.ndarray:
        """(N, NUM_PARAMS + 2C) float64: the RGB path's parameters (geometry; saturation and hue used only with
        red, green and blue), then each band's brightness, then each band's contrast factor, from each sample's
        own seed (draws after those the RGB path uses)."""
        base = super().params(seeds, content)
        strength = self.augment.color_jitter
        low = max(0.0, 1 - strength)
        u = uniforms(seeds, _DRAWS + 2 * self.bands)[:, _DRAWS:]
        return np.concatenate([base, low + (1 + strength - low) * u], axis=1)

    def __call__(self, images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """``images`` (N, C, S, S) standardised float32 -> augmented (N, C, size, size) float32."""
        p = params.to(device=images.device, dtype=torch.float32)
        x = self._geometry(images.to(torch.float32, copy=True), p[:, :NUM_PARAMS])
        if self.augment.color_jitter > 0:
            x = self._band_colour(x, p)
        if self.rgb is not None and self.augment.hue > 0:
            x = self._hue(x, p[:, _HUE])
        return x

    def _band_colour(self, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        brightness = p[:, NUM_PARAMS:NUM_PARAMS + c].view(n, c, 1, 1)
        contrast = p[:, NUM_PARAMS + c:NUM_PARAMS + 2 * c].view(n, c, 1, 1)
        x = x * brightness + (brightness - 1) * self.offset.to(x.device)
        mean = x.mean(dim=(2, 3), keepdim=True)
        x = mean + (x - mean) * contrast
        if self.rgb is not None:
            rgb = x[:, self.rgb]
            grey = rgb.mean(dim=1, keepdim=True)
            x[:, self.rgb] = grey + (rgb - grey) * p[:, _SAT].view(n, 1, 1, 1)
        return x

    def _hue(self, x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        """Turn the red, green and blue bands around the grey axis in the file's units, then standardise again."""
        mean, std = self.mean[:, self.rgb].to(x.device), self.std[:, self.rgb].to(x.device)
        units = x[:, self.rgb] * std + mean
        turned = torch.einsum("nij,njhw->nihw", _hue_matrix(shift), units)
        x[:, self.rgb] = (turned - mean) / std
        return x


def band_extent(height: int, width: int, side: int, resize: str) -> tuple[float, float]:
    """The image's half-extents in its square (fractions of the half-side), as
    :func:`~plantpheno.data.batch_augment.make_square` gives them: below 1 only for the letterbox of ``pad``."""
    if resize != "pad":
        return 1.0, 1.0
    scale = side / max(height, width)
    return max(1, round(width * scale)) / side, max(1, round(height * scale)) / side


def augment_band_batch(augment: BandBatchAugment, squares: Sequence[torch.Tensor], seeds: Sequence[int],
                       content: np.ndarray) -> torch.Tensor:
    """Stack ``(C, S, S)`` standardised squares and augment them with each sample's parameters."""
    params = torch.from_numpy(augment.params(seeds, content))
    return augment(torch.stack(list(squares)), params)
