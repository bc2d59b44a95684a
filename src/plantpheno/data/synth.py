"""Procedural synthetic plant images for tests, demos and smoke-training without real data.

:func:`synthesize_disease` writes an image-folder classification dataset of single leaves (healthy,
leaf spot, rust, blight) on class-independent backgrounds; :func:`synthesize_rosettes` writes a
leaf-count regression dataset of top-down rosettes (several views per plant) with ``labels.csv``.
Both are deterministic by seed: each image has its own generator seeded from ``(seed, kind,
index...)``, so it does not depend on generation order. Scenes are drawn at 2x and downsampled
with LANCZOS for anti-aliasing.
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFilter

from plantpheno.files.atomic import atomic_write_text
from plantpheno.data.synth_field import STYLES, field_generator, fieldify
from plantpheno.errors import DataError

DISEASE_CLASSES: tuple[str, ...] = ("healthy", "leaf_spot", "rust", "blight")

_JPEG_QUALITY = 92
_TAG_DISEASE, _TAG_PLANT, _TAG_VIEW, _TAG_DEFECTS = 1, 2, 3, 4
_CLASS_NAMES = "|".join(DISEASE_CLASSES)
# Relative paths each generator writes; with overwrite=True, anything else in out_dir is refused.
_DISEASE_PATHS = re.compile(rf"(?P<c>{_CLASS_NAMES})(/(?P=c)_\d{{4,}}(_dup|_near)?\.jpg"
                            rf"|/({_CLASS_NAMES})_\d{{4,}}_(conflict|flip)\.jpg)?"
                            r"|labels\.csv|defects\.json|\.(labels\.csv|defects\.json)\..+\.tmp")
_ROSETTE_PATHS = re.compile(r"images(/plant\d{3,}_view\d+\.jpg)?|labels\.csv|\.labels\.csv\..+\.tmp")
_BACKGROUNDS = (  # (brightness, G/R ratio, B/R ratio, texture, grain): soil, paper, dark cloth
    ((85, 125), (0.78, 0.85), (0.62, 0.70), 0.12, 9.0),
    ((165, 215), (0.98, 1.02), (0.94, 1.00), 0.04, 4.0),
    ((25, 50), (0.95, 1.08), (0.95, 1.10), 0.10, 4.0),
)
_Array = npt.NDArray[np.float32]  # masks (H, W) in 0..1, images (H, W, 3) in 0..255
_Paints = list[tuple[_Array, npt.NDArray[np.float64]]]  # (alpha mask, RGB colour), painted in order


@dataclass(frozen=True)
class Defects:
    """Known defects to plant in a synthetic disease dataset, so the data checks can be measured on them.

    ``duplicates``: training images copied byte for byte into the test split; ``near_duplicates``: training
    images re-saved smaller (x0.8) at JPEG quality 80 into the test split; ``conflicts``: images copied into
    another class's folder; ``flips``: images drawn as one class and saved (labelled) as another;
    ``background_shortcut``: each class gets its own kind and tint of background."""

    duplicates: int = 0
    near_duplicates: int = 0
    conflicts: int = 0
    flips: int = 0
    background_shortcut: bool = False

    def any(self) -> bool:
        return bool(self.duplicates or self.near_duplicates or self.conflicts or self.flips or self.background_shortcut)


def synthesize_disease(
    out_dir: str | Path, *, per_class: int = 40, image_size: int = 96, seed: int = 0, overwrite: bool = False,
    defects: Defects | None = None, style: str = "plain",
) -> Path:
    """Write an image-folder dataset ``out_dir/<class>/<class>_<i:04d>.jpg`` and return ``out_dir``.

    Classes are :data:`DISEASE_CLASSES`; each image is one leaf on a random background (soil, paper
    or dark), with class-specific lesions. Raises :class:`DataError` on a bad argument, or when
    ``out_dir`` is not empty and ``overwrite`` is false (or holds files this generator never writes).

    With ``defects`` (any planted), a seeded 70/15/15 split per class is written as ``labels.csv``
    (``path,label,split``, paths relative to ``out_dir``) and what was planted where as ``defects.json``; the
    clean images are the same as without defects (except where a background shortcut is planted).

    ``style``: ``plain`` (lab photos) or ``field`` (the same leaves in a cluttered, unevenly lit scene with a
    colour cast and some defocus: :mod:`plantpheno.data.synth_field`), to build a lab -> field shift.
    """
    if style not in STYLES:
        raise DataError(f"style must be one of {', '.join(STYLES)}, got {style!r}")
    _check_int("per_class", per_class, 1)
    _check_int("image_size", image_size, 32, 1024)
    _check_int("seed", seed, 0)
    defects = defects or Defects()
    for name in ("duplicates", "near_duplicates", "conflicts", "flips"):
        _check_int(name, getattr(defects, name), 0)
    out = Path(out_dir)
    _prepare_out_dir(out, overwrite=overwrite, allowed=_DISEASE_PATHS)
    plan = _plan_defects(defects, per_class, seed)
    rows = []
    for name in DISEASE_CLASSES:
        (out / name).mkdir(parents=True, exist_ok=True)
    for class_index, name in enumerate(DISEASE_CLASSES):
        for i in range(per_class):
            rng = np.random.default_rng([seed, _TAG_DISEASE, class_index, i])
            masks: dict[str, _Array] = {}
            canvas = _render_disease(rng, class_index, _canvas_size(image_size), masks=masks,
                                     shortcut=defects.background_shortcut)
            if style == "field":  # the same leaf, photographed in the field
                canvas = fieldify(field_generator(seed, class_index, i), canvas, masks["leaf"])
            given = plan.flips.get((class_index, i))
            folder = DISEASE_CLASSES[given] if given is not None else name
            rel = f"{folder}/{name}_{i:04d}_flip.jpg" if given is not None else f"{name}/{name}_{i:04d}.jpg"
            _save_jpeg(_finish(rng, canvas, image_size), out / rel)
            rows.append((rel, folder, plan.splits[class_index][i]))
    if defects.any():
        _plant_copies(out, plan, rows)
    return out


@dataclass
class _DefectPlan:
    splits: list[list[str]]  # [class][index] -> train/val/test
    flips: dict[tuple[int, int], int]  # (class, index) -> class it is saved (labelled) as
    duplicates: list[tuple[int, int]]
    near_duplicates: list[tuple[int, int]]
    conflicts: dict[tuple[int, int], int]  # (class, index) -> class whose folder gets a copy
    defects: Defects


def _plan_defects(defects: Defects, per_class: int, seed: int) -> _DefectPlan:
    """Which images carry which defect: distinct training images, chosen by a generator of their own (the
    images themselves do not change)."""
    rng = np.random.default_rng([seed, _TAG_DEFECTS])
    k = len(DISEASE_CLASSES)
    splits = []
    for _ in range(k):
        n_hold = round(0.15 * per_class) if per_class >= 3 else 0
        names = ["test"] * n_hold + ["val"] * n_hold + ["train"] * (per_class - 2 * n_hold)
        splits.append([str(n) for n in rng.permutation(names)])
    train = [(c, i) for c in range(k) for i in range(per_class) if splits[c][i] == "train"]
    wanted = defects.duplicates + defects.near_duplicates + defects.conflicts + defects.flips
    if wanted > len(train):
        raise DataError(f"{wanted} planted defects need as many training images, but only {len(train)} of "
                        f"{k * per_class} are in the training split; raise per_class")
    chosen = [train[j] for j in rng.choice(len(train), wanted, replace=False)]
    cut = np.cumsum([defects.duplicates, defects.near_duplicates, defects.conflicts])
    other = {item: int((item[0] + rng.integers(1, k)) % k) for item in chosen}  # a class other than its own
    return _DefectPlan(splits, {item: other[item] for item in chosen[cut[2]:]}, chosen[:cut[0]],
                       chosen[cut[0]:cut[1]], {item: other[item] for item in chosen[cut[1]:cut[2]]}, defects)


def _plant_copies(out: Path, plan: _DefectPlan, rows: list[tuple[str, str, str]]) -> None:
    """Write the copies (duplicates, near duplicates, conflicting copies), then labels.csv and defects.json."""
    def original(c: int, i: int) -> str:
        name = DISEASE_CLASSES[c]
        return f"{name}/{name}_{i:04d}.jpg"

    planted: dict[str, object] = {"duplicates": [], "near_duplicates": [], "conflicts": [], "flips": []}
    for c, i in plan.duplicates:
        copy = original(c, i).replace(".jpg", "_dup.jpg")
        shutil.copyfile(out / original(c, i), out / copy)
        rows.append((copy, DISEASE_CLASSES[c], "test"))
        planted["duplicates"].append([original(c, i), copy])  # type: ignore[union-attr]
    for c, i in plan.near_duplicates:
        copy = original(c, i).replace(".jpg", "_near.jpg")
        with Image.open(out / original(c, i)) as img:
            smaller = img.convert("RGB").resize((round(img.width * 0.8), round(img.height * 0.8)),
                                                Image.Resampling.BILINEAR)
        smaller.save(out / copy, format="JPEG", quality=80)
        rows.append((copy, DISEASE_CLASSES[c], "test"))
        planted["near_duplicates"].append([original(c, i), copy])  # type: ignore[union-attr]
    for (c, i), other in plan.conflicts.items():
        copy = f"{DISEASE_CLASSES[other]}/{DISEASE_CLASSES[c]}_{i:04d}_conflict.jpg"
        shutil.copyfile(out / original(c, i), out / copy)
        rows.append((copy, DISEASE_CLASSES[other], plan.splits[c][i]))
        planted["conflicts"].append([original(c, i), copy])  # type: ignore[union-attr]
    for (c, i), given in plan.flips.items():
        name = DISEASE_CLASSES[c]
        planted["flips"].append({"path": f"{DISEASE_CLASSES[given]}/{name}_{i:04d}_flip.jpg",  # type: ignore
                                 "drawn_as": name, "labelled": DISEASE_CLASSES[given]})
    planted["background_shortcut"] = plan.defects.background_shortcut
    planted["requested"] = asdict(plan.defects)
    atomic_write_text(out / "defects.json", json.dumps(planted, indent=1) + "\n")
    buf = io.StringIO()
    buf.write("path,label,split\n")
    buf.writelines(f"{path},{label},{split}\n" for path, label, split in rows)
    atomic_write_text(out / "labels.csv", buf.getvalue())


def synthesize_rosettes(
    out_dir: str | Path,
    *,
    plants: int = 40,
    views_per_plant: int = 3,
    image_size: int = 96,
    min_leaves: int = 3,
    max_leaves: int = 12,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write a leaf-count regression dataset and return the path of its ``labels.csv``.

    Images are ``out_dir/images/plant<p:03d>_view<v>.jpg``; ``labels.csv`` has the header
    ``path,value,group`` with ``path`` relative to ``out_dir``, ``value`` the integer leaf count and
    ``group`` the plant id (``plant003``). All views of a plant show the same plant (same leaf count)
    with a different rotation, position and lighting. ``labels.csv`` is written last, atomically.
    """
    for name, value, high in (("plants", plants, None), ("views_per_plant", views_per_plant, None),
                              ("min_leaves", min_leaves, 30), ("max_leaves", max_leaves, 30)):
        _check_int(name, value, 1, high)
    if min_leaves > max_leaves:
        raise DataError(f"min_leaves must be <= max_leaves, got min_leaves={min_leaves} > max_leaves={max_leaves}")
    _check_int("image_size", image_size, 32, 1024)
    _check_int("seed", seed, 0)
    out = Path(out_dir)
    _prepare_out_dir(out, overwrite=overwrite, allowed=_ROSETTE_PATHS)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = ["path,value,group"]
    for p in range(plants):
        plant = _sample_plant(np.random.default_rng([seed, _TAG_PLANT, p]), min_leaves, max_leaves)
        soil = _soil(plant, _canvas_size(image_size))
        for v in range(views_per_plant):
            rng = np.random.default_rng([seed, _TAG_VIEW, p, v])
            rel = f"images/plant{p:03d}_view{v}.jpg"
            _save_jpeg(_finish(rng, _render_rosette(rng, plant, soil.copy()), image_size), out / rel)
            rows.append(f"{rel},{len(plant.leaves)},plant{p:03d}")
    labels = out / "labels.csv"
    atomic_write_text(labels, "\n".join(rows) + "\n")
    return labels


# ----------------------------------------------------------------------------- checks and output


def _check_int(name: str, value: object, low: int, high: int | None = None) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise DataError(f"{name} must be an integer, got {value!r}")
    if value < low:
        raise DataError(f"{name} must be >= {low}, got {value}")
    if high is not None and value > high:
        raise DataError(f"{name} must be <= {high}, got {value}")


def _prepare_out_dir(out: Path, *, overwrite: bool, allowed: re.Pattern[str]) -> None:
    """Refuse a non-empty ``out`` unless ``overwrite`` and it holds only files this generator writes."""
    if out.is_symlink():  # writing (or, with overwrite, deleting) through it would act on the folder it names
        raise DataError(f"out_dir {out} is a symbolic link (to {os.readlink(out)}); give the real folder instead")
    if out.exists() and not out.is_dir():
        raise DataError(f"out_dir {out} exists and is not a folder (a file, a FIFO or a device); choose a folder")
    if not out.exists() or not any(out.iterdir()):
        return
    if not overwrite:
        raise DataError(f"out_dir {out} is not empty; pass overwrite=True or choose an empty folder")
    for path in sorted(out.rglob("*")):
        if path.is_symlink() or not allowed.fullmatch(path.relative_to(out).as_posix()):
            raise DataError(f"out_dir {out} holds {path}, which this generator does not write; not deleting it")
    shutil.rmtree(out)


def _canvas_size(image_size: int) -> int:
    return image_size * 2 if image_size <= 384 else image_size


def _finish(rng: np.random.Generator, canvas: _Array, image_size: int) -> Image.Image:
    """Blur slightly, downsample with LANCZOS, add sensor noise."""
    img = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.9) * canvas.shape[0] / image_size))
    if img.size[0] != image_size:
        img = img.resize((image_size, image_size), Image.Resampling.LANCZOS)
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0.0, rng.uniform(1.0, 3.5), (image_size, image_size, 3))
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8))


def _save_jpeg(img: Image.Image, path: Path) -> None:
    # 4:4:4 chroma keeps the colour of one-pixel lesions (4:2:0 would smear rust pustules).
    img.save(path, format="JPEG", quality=_JPEG_QUALITY, subsampling=0)


# ----------------------------------------------------------------------------- shared drawing


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[_Array, _Array]:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    xs.flags.writeable = ys.flags.writeable = False
    return xs, ys


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> _Array:
    """Low-frequency noise (roughly -1..1) from a ``cells`` x ``cells`` grid upsampled bicubically."""
    coarse = Image.fromarray(rng.standard_normal((cells, cells)).astype(np.float32))
    return np.asarray(coarse.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)


def _lighting(rng: np.random.Generator, size: int, strength: float) -> _Array:
    """A linear illumination gradient in a random direction, mean about 1."""
    xs, ys = _grid(size)
    angle = rng.uniform(0, 2 * np.pi)
    c, n = float(np.cos(angle)), float(np.sin(angle))
    return 1.0 + strength * ((c * xs + n * ys) / size - 0.5 * (c + n))


# with a planted background shortcut, class k gets background _SHORTCUT[k] = (kind, tint): a setup per class
_SHORTCUT = ((0, (1.0, 1.0, 1.0)), (1, (1.0, 1.0, 1.0)), (2, (1.0, 1.0, 1.0)), (1, (0.8, 0.9, 1.15)))


def _background(rng: np.random.Generator, size: int, shortcut: int | None = None) -> _Array:
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


def _blend(img: _Array, alpha: _Array, colour: npt.ArrayLike) -> None:
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

    def alpha(self, opacity: float = 1.0) -> _Array:
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

    def half_width(self, t: _Array) -> _Array:
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


def _leaf_frame(leaf: _Leaf, size: int) -> tuple[_Array, _Array]:
    """Per-pixel relative position ``t`` along the leaf and signed distance ``across`` the midrib."""
    xs, ys = _grid(size)
    dx, dy = xs - leaf.base[0], ys - leaf.base[1]
    c, n = float(np.cos(leaf.angle)), float(np.sin(leaf.angle))
    t = (dx * c + dy * n) / leaf.length
    return t, -dx * n + dy * c - leaf.bend * leaf.length * np.clip(t, 0, 1) ** 2


def _leaf_colour(rng: np.random.Generator, leaf: _Leaf, t: _Array, across: _Array, halfw: _Array) -> _Array:
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


def disease_example(class_name: str, index: int, *, image_size: int = 96,
                    seed: int = 0) -> tuple[Image.Image, npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Image ``index`` of ``class_name`` exactly as :func:`synthesize_disease` writes it (before JPEG), with
    its lesion and leaf masks (``(H, W)`` in 0..1 at ``image_size``): ground truth for where a model should look."""
    if class_name not in DISEASE_CLASSES:
        raise DataError(f"unknown class {class_name!r}; expected one of {', '.join(DISEASE_CLASSES)}")
    class_index = DISEASE_CLASSES.index(class_name)
    rng = np.random.default_rng([seed, _TAG_DISEASE, class_index, index])
    masks: dict[str, _Array] = {}
    canvas = _render_disease(rng, class_index, _canvas_size(image_size), masks=masks)
    image = _finish(rng, canvas, image_size)

    def shrink(mask: _Array) -> npt.NDArray[np.float32]:
        img = Image.fromarray(np.clip(mask * 255, 0, 255).astype(np.uint8))
        return np.asarray(img.resize((image_size, image_size), Image.Resampling.BILINEAR), np.float32) / 255

    return image, shrink(masks["lesion"]), shrink(masks["leaf"])


def _render_disease(rng: np.random.Generator, class_index: int, size: int,
                    masks: dict[str, _Array] | None = None, *, shortcut: bool = False) -> _Array:
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
class _Plant:
    leaves: tuple[tuple[float, float, float, float, float], ...]  # (angle, reach, blade, width, shade)
    radius: float  # plant radius as a fraction of the image size
    green: tuple[float, float, float]
    soil: int  # seed of the pot's soil texture, shared by all views


def _sample_plant(rng: np.random.Generator, min_leaves: int, max_leaves: int) -> _Plant:
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
    return _Plant(tuple(leaves), rng.uniform(0.34, 0.46), (red, green, blue), int(rng.integers(2**31)))


def _soil(plant: _Plant, size: int) -> _Array:
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
    img: _Array, view: tuple[float, float, float, float], leaf: tuple[float, ...], green: _Array
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


def _render_rosette(rng: np.random.Generator, plant: _Plant, soil: _Array) -> _Array:
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
