"""Decoding images into RGB, and checking a dataset's files before any training starts.

Every image becomes an 8-bit RGB ``PIL.Image``: EXIF orientation is applied (phone photos of
leaves are often stored rotated), grayscale/palette/CMYK are converted, alpha is composited onto
black, and 16-bit or float images are rescaled to 8 bits.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Leaf photos from scanners and drones can be huge; a real bomb is still refused by PIL's check.
Image.MAX_IMAGE_PIXELS = 400_000_000


def to_rgb(img: Image.Image) -> Image.Image:
    """Return an 8-bit RGB copy of ``img`` with EXIF orientation applied."""
    img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return Image.fromarray(_rescale_to_uint8(np.asarray(img), sixteen_bit=mode.startswith("I;16")),
                               mode="L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = (img.convert("LA") if mode == "La" else img).convert("RGBA")  # no direct La -> RGBA
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _rescale_to_uint8(arr: np.ndarray, *, sixteen_bit: bool = False) -> np.ndarray:
    """16-bit images by their fixed range (a dark image stays dark); float in [0, 1] by 255; else by 8/16-bit range."""
    is_float = arr.dtype.kind == "f"
    arr = arr.astype(np.float64)
    if is_float and arr.size and np.nanmax(arr) <= 1.0 and np.nanmin(arr) >= 0.0:
        scaled = arr * 255.0
    else:
        top = 65535.0 if sixteen_bit or np.nanmax(arr, initial=0) > 255 else 255.0
        scaled = arr * (255.0 / top)
    return np.rint(np.clip(np.nan_to_num(scaled), 0, 255)).astype(np.uint8)


def load_rgb(path: str | os.PathLike[str]) -> Image.Image:
    """Open an image file as 8-bit RGB (fully decoded)."""
    with Image.open(path) as img:
        img.load()
        return to_rgb(img)


@dataclass(frozen=True)
class ImageCheck:
    """Result of checking one file: its content hash, or why it cannot be used."""

    path: Path
    sha256: str | None
    problem: str | None


def check_image(path: Path) -> ImageCheck:
    """Read, hash and fully decode one file; report a problem instead of raising."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return ImageCheck(path, None, "file not found")
    except IsADirectoryError:
        return ImageCheck(path, None, "is a directory, not an image file")
    except OSError as exc:
        return ImageCheck(path, None, f"cannot read file ({exc.strerror or exc})")
    if not data:
        return ImageCheck(path, None, "empty file (0 bytes)")
    digest = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            rgb = to_rgb(img)
            if rgb.width < 1 or rgb.height < 1:
                return ImageCheck(path, digest, "image has no pixels")
    except UnidentifiedImageError:
        return ImageCheck(path, digest, "not an image (format not recognised)")
    except Exception as exc:  # noqa: BLE001 - decoders of corrupt files raise TypeError, struct.error, EOFError ...
        return ImageCheck(path, digest, f"truncated or corrupt image ({str(exc) or type(exc).__name__})")
    return ImageCheck(path, digest, None)


def check_images(paths: Sequence[Path], *, workers: int | None = None) -> list[ImageCheck]:
    """Check many files in parallel threads (decoding releases the GIL); results keep input order."""
    workers = workers or min(8, os.cpu_count() or 1)
    if len(paths) < 64 or workers == 1:
        return [check_image(p) for p in paths]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(check_image, paths, chunksize=32))
