"""The drawing behind :mod:`plantpheno.data.synth`: backgrounds, lighting and noise, a single diseased leaf
(:func:`render_disease`), and a top-down rosette on potting soil (:func:`sample_plant`, :func:`potting_soil`,
:func:`render_rosette`). Every function draws from the generator it is given, so an image depends only on its
own seed."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFilter

_BACKGROUNDS = (  # (brightness, G/R ratio, B/R ratio, texture, grain): soil, paper, dark cloth
    ((85, 125), (0.78, 0.85), (0.62, 0.70), 0.12, 9.0),
    ((165, 215), (0.98, 1.02), (0.94, 1.00), 0.04, 4.0),
    ((25, 50), (0.95, 1.08), (0.95, 1.10), 0.10, 4.0),
)
Array = npt.NDArray[np.float32]  # masks (H, W) in 0..1, images (H, W, 3) in 0..255
_Paints = list[tuple[Array, npt.NDArray[np.float64]]]  # (alpha mask, RGB colour), painted in order


# ----------------------------------------------------------------------------- shared drawing


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[Array, Array]:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    xs.flags.writeable = ys.flags.writeable = False
    return xs, ys


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> Array:
    """Low-frequency noise (roughly -1..1) from a ``cells`` x ``cells`` grid upsampled bicubically."""
    coarse = Image.fromarray(rng.standard_normal((cells, cells)).astype(np.float32))
    return np.asarray(coarse.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)


def _lighting(rng: np.random.Generator, size: int, strength: float) -> Array:
    """A linear illumination gradient in a random direction, mean about 1."""
    xs, ys = _grid(size)
    angle = rng.uniform(0, 2 * np.pi)
    c, n = float(np.cos(angle)), float(np.sin(angle))
    return 1.0 + strength * ((c * xs + n * ys) / size - 0.5 * (c + n))


# with a planted background shortcut, class k gets background _SHORTCUT[k] = (kind, tint): a setup per class
_SHORTCUT = ((0, (1.0, 1.0, 1.0)), (1, (1.0, 1.0, 1.0)), (2, (1.0, 1.0, 1.0)), (1, (0.8, 0.9, 1.15)))


def _background(rng: np.random.Generator, size: int, shortcut: int | None = None) -> Array:
    """Soil brown, paper grey or dark cloth, with texture, grain and a lighting gradient; ``shortcut`` (a class
    index) fixes the kind and tint by class."""
    kind = int(rng.integers(len(_BACKGROUNDS)))  # drawn either way: the rest of the image stays the same
    tint = np.ones(3, np.float32)
    if shortcut is not None:
        kind, tint = _SHORTCUT[shortcut][0], np.array(_SHORTCUT[shortcut][1], np.float32)
    brightness, green, blue, texture, grain = _BACKGROUNDS[kind]
    base = tint * rng.uniform(*brightness) * np.array([1.0, rng.uniform(*green), rng.uniform(*blue)], np.float32)
    shade = (1.0 + texture * _smooth_noise(rng, size, 6)) * _lighting(rng, size, 0.25)
    return base * shade[..., None] + rng.normal(0, grain, (size, size, 1)).astype(np.float32)


def _blend(img: Array, alpha: Array, colour: npt.ArrayLike) -> None:
    """In place: ``img = img * (1 - alpha) + colour * alpha``."""
    img += alpha[..., None] * (np.asarray(colour, dtype=np.float32) - img)


class _Layer:
    """A greyscale drawing surface that becomes a soft 0..1 alpha mask (blurred by ``blur`` pixels)."""

    def __init__(self, size: int, blur: float) -> None:
        self.image = Image.new("L", (size, size), 0)
        self.draw = ImageDraw.Draw(self.image)
        self.blur = blur

    def disc(self, x: float, y: float, r: float) -> None:
        self.draw.ellipse((x - r, y - r, x + r, y + r), fill=255)

    def alpha(self, opacity: float = 1.0) -> Array:
        img = self.image.filter(ImageFilter.GaussianBlur(self.blur)) if self.blur > 0 else self.image
        return np.asarray(img, dtype=np.float32) * np.float32(opacity / 255.0)


# ----------------------------------------------------------------------------- disease leaves


@dataclass(frozen=True)
class _Leaf:
    base: tuple[float, float]  # where the petiole joins the blade
    angle: float  # direction base -> tip, radians
    length: float
    width: float  # full width at the widest point
    shape: float  # exponent moving the widest point toward the base (<1) or the tip (>1)
    bend: float  # sideways curvature of the midrib, as a fraction of length
    petiole: float  # stalk length as a fraction of the blade length

    def half_width(self, t: Array) -> Array:
        """Half-width of the blade at relative position ``t`` (0 = base, 1 = tip)."""
        return 0.5 * self.width * np.maximum(np.sin(np.pi * np.clip(t, 0.0, 1.0) ** self.shape), 0) ** 0.8

    def point(self, t: float, s: float) -> tuple[float, float]:
        """Canvas point at relative position ``t`` along and ``s`` (-1..1) across the blade."""
        along = t * self.length
        across = s * float(self.half_width(np.float32(t))) + self.bend * self.length * t * t
        c, n = float(np.cos(self.angle)), float(np.sin(self.angle))
        return self.base[0] + along * c - across * n, self.base[1] + along * n + across * c


def _sample_leaf(rng: np.random.Generator, size: int) -> _Leaf:
    length, angle = rng.uniform(0.58, 0.8) * size, rng.uniform(0, 2 * np.pi)
    petiole = rng.uniform(0.10, 0.2) * length
    mid_x, mid_y = size / 2 + rng.uniform(-0.1, 0.1, 2) * size  # centre of blade + petiole
    back = (length - petiole) / 2
    base = (float(mid_x - back * np.cos(angle)), float(mid_y - back * np.sin(angle)))
    width, shape, bend = length * rng.uniform(0.38, 0.55), rng.uniform(0.75, 1.3), rng.normal(0, 0.06)
    return _Leaf(base, angle, length, width, shape, bend, petiole / length)


def _leaf_frame(leaf: _Leaf, size: int) -> tuple[Array, Array]:
    """Per-pixel relative position ``t`` along the leaf and signed distance ``across`` the midrib."""
    xs, ys = _grid(size)
    dx, dy = xs - leaf.base[0], ys - leaf.base[1]
    c, n = float(np.cos(leaf.angle)), float(np.sin(leaf.angle))
    t = (dx * c + dy * n) / leaf.length
    return t, -dx * n + dy * c - leaf.bend * leaf.length * np.clip(t, 0, 1) ** 2


def _leaf_colour(rng: np.random.Generator, leaf: _Leaf, t: Array, across: Array, halfw: Array) -> Array:
    """Green blade with slight hue variation, darker margins, a pale midrib and faint lateral veins."""
    size = t.shape[0]
    green = (np.array([68, 132, 48]) + rng.normal(0, [9, 11, 7])).astype(np.float32)
    rel = np.abs(across) / np.maximum(halfw, 1e-3)
    shade = (0.82 + 0.25 * (1 - np.clip(rel, 0, 1) ** 2)) * (1 + 0.06 * _smooth_noise(rng, size, 5))
    img = green * shade[..., None]
    pale = (175, 195, 120)
    rib = np.clip(1.6 - np.abs(across) / (0.006 * size * (1.4 - t)), 0, 1) * (t > 0) * (t < 0.97)
    _blend(img, 0.55 * rib, pale)
    phase = (t * leaf.length - np.abs(across) * 0.8) / (0.09 * leaf.length)
    vein = (np.abs(phase - np.round(phase)) < 0.06) & (rel < 0.85) & (t > 0.05) & (t < 0.9)
    _blend(img, 0.22 * vein.astype(np.float32), pale)
    return img


def _spot_lesions(rng: np.random.Generator, leaf: _Leaf, size: int) -> _Paints:
    """Leaf spot: 3-8 round dark-brown spots with a lighter centre and a yellow halo."""
    halo, core, centre = _Layer(size, 0.012 * size), _Layer(size, 0.004 * size), _Layer(size, 0.004 * size)
    for _ in range(int(rng.integers(3, 9))):
        x, y = leaf.point(rng.uniform(0.12, 0.88), rng.uniform(-0.7, 0.7))
        r = rng.uniform(0.022, 0.042) * size
        halo.disc(x, y, 1.9 * r)
        core.disc(x, y, r)
        centre.disc(x, y, 0.45 * r)
    browns = np.array([[72, 44, 26], [135, 95, 55]])
    return [(halo.alpha(0.8), np.array([205, 190, 60])), (core.alpha(), browns[0]), (centre.alpha(0.7), browns[1])]


def _rust_lesions(rng: np.random.Generator, leaf: _Leaf, size: int) -> _Paints:
    """Rust: 20-60 small orange-brown pustules with faint chlorotic halos."""
    halo, pustule = _Layer(size, 0.006 * size), _Layer(size, 0.002 * size)
    for _ in range(int(rng.integers(20, 61))):
        x, y = leaf.point(rng.uniform(0.05, 0.95), rng.uniform(-0.9, 0.9))
        r = rng.uniform(0.008, 0.016) * size
        halo.disc(x, y, 2.2 * r)
        pustule.disc(x, y, r)
    colour = np.array([200, 105, 35]) + rng.normal(0, [10, 10, 6])
    return [(halo.alpha(0.55), np.array([190, 185, 70])), (pustule.alpha(), colour)]


def _blob(x: float, y: float, radii: npt.NDArray[np.float64]) -> list[tuple[float, float]]:
    """Polygon around (x, y) with one radius per evenly spaced direction."""
    angles = np.linspace(0, 2 * np.pi, len(radii), endpoint=False)
    return [(float(x + r * np.cos(a)), float(y + r * np.sin(a))) for a, r in zip(angles, radii)]


def _blight_lesions(rng: np.random.Generator, leaf: _Leaf, size: int) -> _Paints:
    """Blight: one or two large irregular necrotic patches, usually from the edge, with yellowing."""
    yellow, margin, necrotic = _Layer(size, 0.03 * size), _Layer(size, 0.006 * size), _Layer(size, 0.006 * size)
    for _ in range(int(rng.integers(1, 3))):
        if rng.random() < 0.25:  # from the tip
            x, y = leaf.point(rng.uniform(0.85, 1.0), rng.uniform(-0.3, 0.3))
        else:  # from one edge
            x, y = leaf.point(rng.uniform(0.2, 0.85), rng.choice([-1.0, 1.0]) * rng.uniform(0.6, 1.1))
        wobble = np.convolve(np.tile(rng.normal(0, 0.35, 18), 3), np.ones(3) / 3, mode="same")[18:36]
        radii = rng.uniform(0.16, 0.28) * leaf.length * np.clip(1 + wobble, 0.45, 1.7)  # smooth, closed
        for layer, scale in ((yellow, 1.45), (margin, 1.0), (necrotic, 0.82)):  # one outline, three scales
            layer.draw.polygon(_blob(x, y, radii * scale), fill=255)
    tan = np.array([165, 128, 78]) + rng.normal(0, [12, 10, 8])
    margin_brown, yellowing = np.array([88, 58, 34]), np.array([195, 180, 70])
    return [(yellow.alpha(0.75), yellowing), (margin.alpha(), margin_brown), (necrotic.alpha(), tan)]


_LESIONS = {1: _spot_lesions, 2: _rust_lesions, 3: _blight_lesions}


def render_disease(rng: np.random.Generator, class_index: int, size: int,
                    masks: dict[str, Array] | None = None, *, shortcut: bool = False) -> Array:
    """One leaf of class ``DISEASE_CLASSES[class_index]`` on a class-independent background (or, with
    ``shortcut``, on its class's own background); ``masks`` (when given) receives the ``lesion`` and ``leaf``
    alpha masks."""
    img = _background(rng, size, class_index if shortcut else None)
    leaf = _sample_leaf(rng, size)
    t, across = _leaf_frame(leaf, size)
    halfw = leaf.half_width(t)
    blade = np.clip(halfw - np.abs(across) + 0.5, 0, 1) * ((t >= 0) & (t <= 1))
    stalk_w = 0.011 * size * (1.0 + 0.4 * t / leaf.petiole)
    stalk = np.clip(stalk_w - np.abs(across) + 0.5, 0, 1) * ((t < 0.05) & (t > -leaf.petiole))
    colour = _leaf_colour(rng, leaf, t, across, halfw)
    lesion = np.zeros_like(blade)
    if class_index in _LESIONS:
        for alpha, paint in _LESIONS[class_index](rng, leaf, size):
            _blend(colour, alpha * blade, paint)  # masked by the blade: lesions stay on the leaf
            lesion = np.maximum(lesion, alpha * blade)
    mask = np.maximum(blade, stalk)
    if masks is not None:
        masks.update(lesion=lesion, leaf=mask)
    shift = max(1, int(0.015 * size))  # soft cast shadow down-right of the leaf
    shadow = Image.fromarray((np.roll(mask, (shift, shift), axis=(0, 1)) * 255).astype(np.uint8))
    img *= 1.0 - 0.3 / 255 * np.asarray(shadow.filter(ImageFilter.GaussianBlur(shift)), np.float32)[..., None]
    _blend(img, mask, colour)
    return img * np.float32(rng.uniform(0.88, 1.12))


# ----------------------------------------------------------------------------- rosettes


@dataclass(frozen=True)
class Plant:
    leaves: tuple[tuple[float, float, float, float, float], ...]  # (angle, reach, blade, width, shade)
    radius: float  # plant radius as a fraction of the image size
    green: tuple[float, float, float]
    soil: int  # seed of the pot's soil texture, shared by all views


def sample_plant(rng: np.random.Generator, min_leaves: int, max_leaves: int) -> Plant:
    """A rosette: leaf count, evenly spaced jittered angles, reaches and widths that keep leaves apart."""
    count = int(rng.integers(min_leaves, max_leaves + 1))
    spacing = 2 * np.pi / count
    leaves = []
    for k in range(count):
        angle = (k + rng.uniform(-0.15, 0.15)) * spacing
        reach = rng.uniform(0.62, 1.0)  # tip distance from the centre, relative to the plant radius
        blade = rng.uniform(0.55, 0.72)  # blade share of the leaf length (the rest is petiole)
        width = min(rng.uniform(0.55, 0.8) * reach * blade / 2, 0.8 * reach * (1 - blade / 2) * np.sin(spacing / 2))
        leaves.append((angle, reach, blade, max(width, 0.035), rng.uniform(0.85, 1.1)))
    leaves.sort(key=lambda leaf: -leaf[1])  # longest (oldest) first, younger leaves drawn on top
    red, green, blue = (float(c) for c in np.array([70, 140, 50]) + rng.normal(0, [10, 12, 8]))
    return Plant(tuple(leaves), rng.uniform(0.34, 0.46), (red, green, blue), int(rng.integers(2**31)))


def potting_soil(plant: Plant, size: int) -> Array:
    """Dark potting soil with perlite specks inside a round pot rim; identical for every view."""
    rng = np.random.default_rng(plant.soil)
    base = rng.uniform(55, 85) * np.array([1.0, rng.uniform(0.75, 0.82), rng.uniform(0.58, 0.65)], np.float32)
    img = base * (1 + 0.15 * _smooth_noise(rng, size, 10))[..., None]
    img += rng.normal(0, 10, (size, size, 1)).astype(np.float32)
    specks = _Layer(size, 0.002 * size)
    for _ in range(int(rng.integers(6, 25))):
        specks.disc(*rng.uniform(0, size, 2), rng.uniform(0.004, 0.01) * size)
    _blend(img, specks.alpha(), (215, 212, 200))
    xs, ys = _grid(size)
    outside = np.hypot(xs - size / 2, ys - size / 2) - rng.uniform(0.5, 0.62) * size
    _blend(img, np.clip(outside * 0.5, 0, 1), (48, 48, 52))
    return img


def _leaf_box(size: int, cx: float, cy: float, extent: float) -> tuple[slice, slice]:
    """Row and column slices of the square of half-side ``extent`` around (cx, cy), clipped to the canvas."""
    bounds = (cy - extent, cy + extent + 1, cx - extent, cx + extent + 1)
    lo_y, hi_y, lo_x, hi_x = (int(np.clip(v, 0, size)) for v in bounds)
    return slice(lo_y, hi_y), slice(lo_x, hi_x)


def _paint_rosette_leaf(
    img: Array, view: tuple[float, float, float, float], leaf: tuple[float, ...], green: Array
) -> None:
    """In place: draw one leaf (petiole + elliptical blade with a darker rim and a pale midrib)."""
    cx, cy, rotation, radius = view
    angle, reach, blade, width, shade = leaf
    c, n = float(np.cos(angle + rotation)), float(np.sin(angle + rotation))
    rows, cols = _leaf_box(img.shape[0], cx + c * reach * radius / 2, cy + n * reach * radius / 2,
                           (reach / 2 + width) * radius + 2)  # only the pixels the leaf can touch
    xs, ys = (g[rows, cols] - o for g, o in zip(_grid(img.shape[0]), (cx, cy)))
    u, v = (xs * c + ys * n) / radius, (ys * c - xs * n) / radius
    half = reach * blade / 2
    ell = np.hypot((u - (reach - half)) / half, v / width)  # < 1 inside the blade
    stalk = np.clip((0.018 - np.abs(v)) * radius + 0.5, 0, 1) * ((u > 0) & (u < reach - half))
    mask = np.maximum(np.clip((1 - ell) * width * radius + 0.5, 0, 1), stalk)
    tone = shade * (0.8 + 0.3 * (1 - np.clip(ell, 0, 1) ** 2)) * (1 - 0.3 * np.clip((ell - 0.82) * 6, 0, 1))
    colour = green * tone[..., None]
    rib = np.clip(1.5 - np.abs(v) * radius / (0.006 * img.shape[0]), 0, 1) * ((u > 0) & (ell < 0.9))
    _blend(colour, 0.35 * rib, (170, 195, 115))
    _blend(img[rows, cols], mask, colour)


def render_rosette(rng: np.random.Generator, plant: Plant, soil: Array) -> Array:
    """One view of ``plant`` on its ``soil`` (modified in place): rotation, shift, scale and lighting."""
    size = soil.shape[0]
    cx, cy = (float(v) for v in size / 2 + rng.uniform(-0.06, 0.06, 2) * size)
    view = (cx, cy, rng.uniform(0, 2 * np.pi), plant.radius * size * rng.uniform(0.95, 1.05))
    green = np.array(plant.green, np.float32)
    for leaf in plant.leaves:
        _paint_rosette_leaf(soil, view, leaf, green)
    centre = _Layer(size, 0.004 * size)
    centre.disc(cx, cy, 0.025 * size)
    _blend(soil, centre.alpha(), (150, 180, 70))
    soil *= (rng.uniform(0.8, 1.2) * _lighting(rng, size, 0.3))[..., None]
    return soil
