"""The "field" style of the synthetic disease leaves: the same leaf, lesions and label as the plain ("lab") style,
photographed somewhere else.

A lab photo (``style="plain"``) shows one leaf on soil, paper or dark cloth under even light. A field photo
(``style="field"``) keeps that leaf (its mask comes from the renderer) and changes what a model trained on lab
photos never saw: a cluttered background of other green leaves, grass blades and soil with stones; a warm or
cool colour cast and a stronger, uneven light (sun and shade); a little defocus. Together they build a lab ->
field shift in which the class evidence (the lesions) is unchanged, so what a model loses there is what it
learned from the setting rather than the disease.

Deterministic by seed: the field parts are drawn from a generator of their own, seeded from the same
``(seed, class, index)`` as the leaf, so a field image does not depend on generation order either.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFilter

STYLES: tuple[str, ...] = ("plain", "field")
_TAG_FIELD = 5  # after synth.py's tags 1-4: the field parts' own generator

_Array = npt.NDArray[np.float32]


def field_generator(seed: int, class_index: int, index: int) -> np.random.Generator:
    """The generator of one field image's background, light and blur."""
    return np.random.default_rng([seed, _TAG_FIELD, class_index, index])


def fieldify(rng: np.random.Generator, canvas: _Array, leaf: _Array) -> _Array:
    """``canvas`` (a rendered lab image, ``(S, S, 3)`` in 0..255) with everything outside the ``leaf`` mask
    (``(S, S)`` in 0..1) replaced by a field background, then a colour cast, uneven light and defocus over the
    whole picture. Returns a new array."""
    size = canvas.shape[0]
    background = _clutter(rng, size)
    alpha = leaf[..., None]
    img = background * (1.0 - alpha) + canvas * alpha
    cast = np.array([1.0, 1.0, 1.0], np.float32) + rng.uniform(-0.18, 0.18, 3).astype(np.float32)
    cast /= cast.mean()  # a hue shift (warm evening, cool shade), not a brightness change
    img = img * cast * np.float32(rng.uniform(0.75, 1.3))
    img = img * _sun_and_shade(rng, size)[..., None]
    blurred = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(rng.uniform(0.0, 1.6) * size / 192))
    return np.asarray(blurred, dtype=np.float32)


def _clutter(rng: np.random.Generator, size: int) -> _Array:
    """Soil with stones, overgrown by grass blades and other (darker, out-of-focus) leaves."""
    soil = np.array([95, 75, 52], np.float32) * np.float32(rng.uniform(0.6, 1.2))
    coarse = Image.fromarray(rng.standard_normal((8, 8)).astype(np.float32)).resize((size, size),
                                                                                    Image.Resampling.BICUBIC)
    img = soil * (1.0 + 0.2 * np.asarray(coarse, np.float32))[..., None]
    img = img + rng.normal(0, 12, (size, size, 1)).astype(np.float32)
    layer = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(layer)
    for _ in range(int(rng.integers(8, 20))):  # pale stones
        x, y, r = *rng.uniform(0, size, 2), rng.uniform(0.01, 0.04) * size
        grey = int(rng.uniform(120, 190))
        draw.ellipse((x - r, y - r * 0.7, x + r, y + r * 0.7), fill=(grey, grey - 5, grey - 15))
    for _ in range(int(rng.integers(25, 60))):  # grass blades
        x, y = rng.uniform(0, size, 2)
        angle, length = rng.uniform(-0.6, 0.6) - np.pi / 2, rng.uniform(0.1, 0.35) * size
        green = tuple(int(v) for v in np.array([70, 125, 45]) * rng.uniform(0.5, 1.2))
        draw.line((x, y, x + length * np.cos(angle), y + length * np.sin(angle)), fill=green,
                  width=max(1, int(rng.uniform(0.005, 0.012) * size)))
    for _ in range(int(rng.integers(3, 8))):  # neighbouring leaves, healthy green, partly out of frame
        x, y = rng.uniform(-0.1, 1.1, 2) * size
        a, b = rng.uniform(0.1, 0.3) * size, rng.uniform(0.05, 0.12) * size
        green = tuple(int(v) for v in np.array([60, 120, 45]) * rng.uniform(0.55, 1.05))
        draw.ellipse((x - a, y - b, x + a, y + b), fill=green)
    layer = layer.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.0) * size / 192))  # shallow depth of field
    return np.asarray(layer, dtype=np.float32)


def _sun_and_shade(rng: np.random.Generator, size: int) -> _Array:
    """A multiplicative light map: a few soft patches of sun and shade (mean about 1)."""
    coarse = rng.uniform(0.65, 1.35, (3, 3)).astype(np.float32)
    light = Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC)
    return np.clip(np.asarray(light, np.float32), 0.5, 1.5)
