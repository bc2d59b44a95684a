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
                                   read_raw, select_bands, stacked_raw)
from plantpheno.records.model_meta import ModelMeta
from plantpheno.errors import DataError

__all__ = ["BandCountError", "BandInput"]


@dataclass(frozen=True)
class BandInput:
    """The bands a model package (or checkpoint) reads, their scaling and its square: call it on an image file
    path, its bytes, a numpy array ``(H, W[, C])`` channels last, or a PIL image (a false-colour composite); with
    bands of their own files, a path (band files found by their patterns) or a dict ``{"image": path, band: path}``
    (paths or bytes)."""

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

        if any(b.file_source for b in self.bands):
            return self._per_band(item, max_pixels)
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
        return self._standard(raw, self.bands, source)

    def _per_band(self, item: Any, max_pixels: int | None) -> torch.Tensor:
        """An image with bands of their own files: a path (patterns find them) or a dict of files by band."""
        files = {b.name.lower() for b in self.bands if b.file_source}
        if isinstance(item, dict):
            unknown = sorted(str(k) for k in item if str(k).lower() not in files | {"image"})
            if unknown:
                raise DataError(f"band files given for {', '.join(unknown)}; this model reads files for bands "
                                f"{', '.join(sorted(files))} and the image itself as 'image'")
            image, companions = item.get("image"), {str(k).lower(): v for k, v in item.items() if k != "image"}
        elif isinstance(item, (str, os.PathLike)):
            image, companions = item, None
        else:
            raise DataError(f"cannot read bands {', '.join(sorted(files))} (one file each) from a "
                            f"{type(item).__name__}: expected the image's path (its band files found by their "
                            f"patterns) or a dict {{'image': path, band: path}}")
        if image is None and any(b.in_image for b in self.bands):
            raise DataError("a dict of band files without 'image': this model also reads bands of the image file")
        source = str(image) if image is not None and not isinstance(image, (bytes, bytearray)) else "image bytes"
        try:
            raw, specs = stacked_raw(image, self.bands, companions=companions, max_pixels=max_pixels)
        except BandCountError as exc:
            raise BandCountError(f"{exc}; this model was trained on bands "
                                 f"{', '.join(b.name for b in self.bands)} (from its package's metadata)") from None
        return self._standard(raw, specs, source)

    def _standard(self, raw: np.ndarray, specs: tuple[BandSpec, ...], source: object) -> torch.Tensor:
        try:
            pixels = select_bands(raw, specs, source=source)
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
    channels = 1 + max((b.channel for b in bands if b.in_image), default=0)
    pixels = np.zeros((32, 32, channels), dtype=np.float32)
    for band, mean in zip(bands, norm.mean):
        if band.in_image:
            pixels[:, :, band.channel] = mean
    buf = io.BytesIO()
    tifffile.imwrite(buf, pixels, photometric="minisblack", planarconfig="contig")
    return buf.getvalue()
