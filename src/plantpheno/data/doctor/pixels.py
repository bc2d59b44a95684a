"""What the data checks need from an image's pixels, computed in the one decode of the image check.

:func:`image_stats` turns a decoded RGB image into :class:`ImageStats`: a hash of the decoded pixels (exact
duplicates, whatever the file format), a perceptual hash (near duplicates), a few quality measures and the
features of a thin border strip (background shortcut). :mod:`plantpheno.data.images` calls it while it checks a
file and memoises the result with the file's size and mtime, so a later run does not decode the image again.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

STATS_VERSION = 5  # bump when a measure below changes: memoised stats of an older version are recomputed
QUALITY_SIDE = 256  # quality measures on a copy whose longer side is at most this (the scale a model sees)
BORDER_THUMB, BORDER_WIDTH = 64, 4  # border features: a 4-pixel frame of the image resized to 64 x 64
# The brightest / darkest 0.1 % of the pixels decide "dark" / "washed out", and an image is uniform where fewer
# than 0.1 % differ from its median colour: a seedling that covers 0.25 % of a photo on white paper or black cloth
# (the smallest measured) still counts as content, so such photos are not called blank, dark or washed out.
EXTREME_SHARE = 0.001
UNIFORM_LEVELS = 32  # of 255 in any channel: far above sensor noise (sigma 6 keeps 100.000 % within), below a leaf
COLOUR_THUMB = 16  # the aligned-pixel check of a near-duplicate candidate: the image as 16 x 16 RGB (768 bytes)
_HIST_BINS = 8
BORDER_FEATURES = 4 * 6 + 4 * 3 + 3 * _HIST_BINS


@dataclass(frozen=True)
class ImageStats:
    """Per-image measures used by the data checks (all from the decoded 8-bit RGB pixels)."""

    width: int
    height: int
    pixel_hash: str  # SHA-256 (128 bits) of the decoded RGB pixels and their shape: the same picture in any file
    phash: str  # 64-bit DCT perceptual hash (imagehash.phash) as 16 hex digits
    dark: float  # 99.9th percentile of luma, 0..1: low when even the brightest pixels are dark
    bright: float  # 0.1th percentile of luma, 0..1: high when even the darkest pixels are bright (washed out)
    sharpness: float  # 99.9th percentile of the gradient over the image's luma range (-1: flat, not measured)
    uniform: float  # share of pixels within UNIFORM_LEVELS of the median colour in every channel (1 = one colour)
    border: tuple[float, ...]  # features of the border strip: see border_features
    thumb: str = ""  # the image squeezed to COLOUR_THUMB x COLOUR_THUMB RGB, base64 of its bytes (see colour_thumb)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["border"] = [round(v, 4) for v in self.border]
        return {"v": STATS_VERSION, **data}

    @classmethod
    def from_json(cls, data: Any) -> ImageStats | None:
        """The stats memoised by :meth:`to_json`, or None when they are missing or of another version."""
        if not isinstance(data, dict) or data.get("v") != STATS_VERSION:
            return None
        try:
            fields = {k: v for k, v in data.items() if k != "v"}
            fields["border"] = tuple(float(v) for v in fields["border"])
            return cls(**fields)
        except (KeyError, TypeError, ValueError):
            return None


def image_stats(rgb: Image.Image, *, size: tuple[int, int] | None = None) -> ImageStats:
    """Measure one decoded 8-bit RGB image (about 3 ms of CPU for a 256 px photo on a 2-core AMD EPYC, half of it the
    uniform share and colour thumbnail; memoised, so only once per file).

    ``size`` is the file's own (width, height) when ``rgb`` was decoded at a reduced scale (a large JPEG's draft
    mode, which keeps at least ``QUALITY_SIDE`` pixels on its shorter side, so the measures see their scale)."""
    digest = hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode())  # OpenSSL's SHA-256: 2.5x BLAKE2b's speed here
    digest.update(rgb.tobytes())
    small = rgb if max(rgb.size) <= QUALITY_SIDE else _shrunk(rgb, QUALITY_SIDE)
    luma = np.asarray(small.convert("L"))
    counts = np.bincount(luma.ravel(), minlength=256)
    low, high = _percentiles(counts, (EXTREME_SHARE, 1 - EXTREME_SHARE))
    thumb = small.resize((BORDER_THUMB, BORDER_THUMB), Image.Resampling.BOX)
    width, height = size or rgb.size
    return ImageStats(
        width=width, height=height, pixel_hash=digest.hexdigest()[:32], phash=phash(thumb),
        dark=round(high / 255, 4), bright=round(low / 255, 4), sharpness=round(_sharpness(luma, high - low), 4),
        uniform=round(_uniform_share(np.asarray(small)), 6), border=border_features(thumb),
        thumb=base64.b64encode(thumb.resize((COLOUR_THUMB, COLOUR_THUMB), Image.Resampling.BOX).tobytes()).decode(),
    )


def colour_thumb(stats: ImageStats) -> np.ndarray | None:
    """The (16, 16, 3) float RGB thumbnail of :attr:`ImageStats.thumb`, or None when it was not recorded."""
    if not stats.thumb:
        return None
    raw = np.frombuffer(base64.b64decode(stats.thumb), dtype=np.uint8)
    return raw.reshape(COLOUR_THUMB, COLOUR_THUMB, 3).astype(np.float64) if raw.size == 3 * COLOUR_THUMB ** 2 else None


def thumb_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """How alike two aligned colour thumbnails are: the correlation of their RGB values, each image standardised
    by its own mean and spread over all three channels (so a re-exposed or lower-contrast copy still scores near
    1, while a brown lesion where the other leaf is green lowers it). 1 = the same picture; -1..1."""
    za = (a - a.mean()) / max(float(a.std()), 1e-6)
    zb = (b - b.mean()) / max(float(b.std()), 1e-6)
    return float((za * zb).mean())


def phash(image: Image.Image) -> str:
    """The perceptual hash of imagehash.phash (8 x 8 lowest frequencies of the DCT-II of the 32 x 32 LANCZOS
    grayscale image, each bit: above their median), as its 16 hex digits: the same bits as imagehash (a test
    compares them) without scipy's DCT call. :func:`image_stats` hashes the 64 x 64 thumbnail (a third of the
    cost of hashing a 256 px image; a re-saved or resized copy stays within 4 bits either way)."""
    pixels = np.asarray(image.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    low = _DCT8 @ pixels @ _DCT8.T
    bits = (low > np.median(low)).ravel()
    return f"{int(''.join('1' if b else '0' for b in bits), 2):016x}"


# rows 0..7 of scipy.fftpack.dct's unnormalised DCT-II matrix for 32 samples: 2 cos(pi k (2n + 1) / 64)
_DCT8 = 2 * np.cos(np.pi * np.arange(8)[:, None] * (2 * np.arange(32)[None, :] + 1) / 64)


def _shrunk(rgb: Image.Image, side: int) -> Image.Image:
    scale = side / max(rgb.size)
    size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
    return rgb.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


def _percentiles(counts: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """Percentiles (as fractions) of 8-bit values from their histogram."""
    cumulative = np.cumsum(counts)
    return [float(np.searchsorted(cumulative, q * (cumulative[-1] - 1) + 1)) for q in qs]


def _sharpness(luma: np.ndarray, spread: float) -> float:
    """How steep the steepest edges are: the 99.9th percentile of the gradient (the larger of the horizontal and
    vertical central differences, halved: a one-pixel step of height h gives h / 2), relative to the image's own
    luma range (0.1th to 99.9th percentile), so a low-contrast photo is not called blurry. The steepest 0.1 %,
    not 1 %: a seedling on white paper has few edge pixels, and below them lies sensor noise (0.03 at the 99th
    percentile, which read as "blurry"). A focused edge gives about 0.15 and more; the same photo blurred with a
    Gaussian of sigma 3 px about 0.09."""
    if min(luma.shape) < 3 or spread < UNIFORM_LEVELS:
        return -1.0  # nearly flat: no edges to judge, not measured
    values = luma.astype(np.int16)
    gradient = np.maximum(np.abs(values[2:, 1:-1] - values[:-2, 1:-1]), np.abs(values[1:-1, 2:] - values[1:-1, :-2]))
    (top,) = _percentiles(np.bincount(gradient.ravel(), minlength=256), (1 - EXTREME_SHARE,))
    return top / 2 / spread


def _uniform_share(rgb: np.ndarray) -> float:
    """The share of pixels within UNIFORM_LEVELS of the image's median colour in each of R, G and B (a lookup
    table per channel: 0.9 ms for a 256 px photo, half the time of the arithmetic on int16 copies)."""
    far = np.zeros(rgb.shape[:2], dtype=bool)
    half = (rgb.shape[0] * rgb.shape[1] + 1) / 2
    for c in range(3):
        channel = rgb[..., c]
        median = int(np.searchsorted(np.cumsum(np.bincount(channel.ravel(), minlength=256)), half))
        far |= (np.abs(np.arange(256) - median) > UNIFORM_LEVELS)[channel]
    return 1.0 - float(far.mean())


def border_features(rgb: Image.Image) -> tuple[float, ...]:
    """Features of the image's border only: the image is resized to 64 x 64 and its 4-pixel frame described by
    the mean and spread of each colour on each side (24), the mean colour of each corner patch (12) and an
    8-bin histogram of each colour over the frame (24); colours in 0..1. Nothing inside the frame is seen."""
    if rgb.size != (BORDER_THUMB, BORDER_THUMB):
        rgb = rgb.resize((BORDER_THUMB, BORDER_THUMB), Image.Resampling.BOX)
    thumb = np.asarray(rgb, dtype=np.float32) * np.float32(1 / 255)
    w = BORDER_WIDTH
    sides = np.concatenate([thumb[:w], thumb[-w:], thumb[:, :w].transpose(1, 0, 2),
                            thumb[:, -w:].transpose(1, 0, 2)]).reshape(4, -1, 3)  # (side, pixel, colour)
    corners = np.concatenate([thumb[:w, :w], thumb[:w, -w:], thumb[-w:, :w], thumb[-w:, -w:]]).reshape(4, -1, 3)
    frame = sides.reshape(-1, 3)
    bins = np.minimum((frame * _HIST_BINS).astype(np.int64), _HIST_BINS - 1) + _HISTOGRAM_OFFSETS
    hist = np.bincount(bins.ravel(), minlength=3 * _HIST_BINS) * (1.0 / len(frame))
    features = np.concatenate([np.concatenate([sides.mean(axis=1), sides.std(axis=1)], axis=1).ravel(),
                               corners.mean(axis=1).ravel(), hist])
    return tuple(np.round(features.astype(np.float64), 4).tolist())


_HISTOGRAM_OFFSETS = _HIST_BINS * np.arange(3)
