"""A model's band input at prediction: any image it is given -> the standardised square its training saw."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from plantpheno.band_config import BandSpec
from plantpheno.data.band_loaders import BandSquare
from plantpheno.data.bands import (DEFAULT_MAX_PIXELS, BandCountError, BandNorm, TooLarge, bands_from_meta,
                                   read_raw, select_bands)
from plantpheno.records.model_meta import ModelMeta
from plantpheno.errors import DataError

__all__ = ["BandCountError", "BandInput"]


@dataclass(frozen=True)
class BandInput:
    """The bands a model package (or checkpoint) reads, their scaling and its square: call it on an image file
    path, its bytes, a numpy array ``(H, W[, C])`` channels last, or a PIL image (a false-colour composite)."""

    bands: tuple[BandSpec, ...]
    norm: BandNorm
    square: BandSquare

    @classmethod
    def of(cls, meta: ModelMeta) -> BandInput | None:
        """From a package's (or checkpoint's) metadata; None for an RGB model."""
        found = bands_from_meta(meta)
        if found is None:
            return None
        return cls(*found, BandSquare(meta.image_size, meta.resize))

    def __call__(self, item: Any, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> torch.Tensor:
        from PIL import Image

        if isinstance(item, (str, os.PathLike, bytes, bytearray, memoryview)):
            source = item if isinstance(item, (str, os.PathLike)) else "image bytes"
            raw = read_raw(item, max_pixels=max_pixels)
        elif isinstance(item, (np.ndarray, Image.Image)):
            source, raw = f"{type(item).__name__} input", np.asarray(item)
            if raw.ndim >= 2 and max_pixels is not None and raw.shape[0] * raw.shape[1] > max_pixels:
                raise TooLarge(raw.shape[1], raw.shape[0], max_pixels)
        else:
            raise DataError(f"cannot read bands from a {type(item).__name__}: expected a path, encoded image bytes, "
                            f"a numpy array (H, W[, C]) or a PIL image")
        try:
            pixels = select_bands(raw, self.bands, source=source)
        except BandCountError as exc:
            names = ", ".join(b.name for b in self.bands)
            raise BandCountError(f"{exc}; this model was trained on bands {names} (from its package's "
                                 f"metadata)") from None
        standard = torch.from_numpy(np.ascontiguousarray(self.norm.apply(pixels).transpose(2, 0, 1)))
        return self.square(standard)


def example_tiff(meta: ModelMeta) -> bytes:
    """A small TIFF with the channels a model of ``data.bands`` reads, each at its training mean (an MLflow input
    example)."""
    import io

    import tifffile

    found = bands_from_meta(meta)
    assert found is not None
    bands, norm = found
    channels = 1 + max(b.channel for b in bands if b.channel is not None)
    pixels = np.zeros((32, 32, channels), dtype=np.float32)
    for band, mean in zip(bands, norm.mean):
        if band.channel is not None:
            pixels[:, :, band.channel] = mean
    buf = io.BytesIO()
    tifffile.imwrite(buf, pixels, photometric="minisblack", planarconfig="contig")
    return buf.getvalue()
