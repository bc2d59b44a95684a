"""``plantpheno data synth --kind multispectral``: four-band 16-bit TIFFs in which the disease shows only in NIR.

Each image is one leaf on soil, written as ``OUT/<class>/<class>_<i:04d>.tif``: a (H, W, 4) uint16 TIFF of red,
green, blue and near-infrared reflectance (0-1 scaled to 0-65535; samples interleaved). The classes are
``healthy`` and ``stressed``. Stress is drawn as it begins in a real leaf: patches of tissue whose near-infrared
reflectance drops (the mesophyll's structure breaks down) before anything changes in the visible bands. The
visible bands of both classes come from one distribution: the same leaf shapes, greens and shading, and the same
decoy spots (dust, old scars) that have nothing to do with the label. So RGB alone is at chance, and a model can
only solve the set if the NIR band reaches it (``benchmarks/bands.py``).

``layout="per-band"`` writes the same pixels as one file per band: ``<class>_<i:04d>.tif`` holds red, green and
blue, ``<class>_<i:04d>_NIR.tif`` the NIR band beside it, and ``labels.csv`` (``path,label,nir_path``) names both,
for configs that read NIR by pattern (``{stem}_NIR.tif``) or by manifest column (``nir_path``).

Both layouts also write ``stress.csv`` (``path,value``, and ``nir_path`` in the per-band layout), a trait manifest
for ``task=regression``: ``value`` is the share of the leaf's area, in percent, whose NIR reflectance dropped (0 for a
healthy leaf; about 15-60 % for a stressed one), so the trait too is visible in NIR only.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from plantpheno.data.synth import _check_int, _prepare_out_dir
from plantpheno.errors import DataError

MULTISPECTRAL_CLASSES = ("healthy", "stressed")
MULTISPECTRAL_BANDS = ("red", "green", "blue", "nir")
_TAG = 31  # the generator's own random stream
_PATHS = re.compile(r"labels\.csv|stress\.csv|(healthy|stressed)(/(healthy|stressed)_\d{4,}(_NIR)?\.tif)?")
LAYOUTS = ("one-file", "per-band")
NIR_PATTERN = "{stem}_NIR.tif"  # the NIR file of an image in the per-band layout
# reflectance (0-1) of soil and leaf in red, green, blue, NIR: a leaf is dark in red and blue, brighter in green,
# bright in NIR (the "red edge"); soil rises slowly from blue to NIR
_SOIL = np.array([0.22, 0.18, 0.13, 0.30])
_LEAF = np.array([0.07, 0.16, 0.05, 0.52])
_STRESSED_NIR = 0.55  # stressed tissue keeps this share of its NIR reflectance


def synthesize_multispectral(out_dir: str | Path, *, per_class: int = 40, image_size: int = 64, seed: int = 0,
                             overwrite: bool = False, layout: str = "one-file", decoys: bool = True) -> Path:
    """Write the dataset (see the module's docstring) and return ``out_dir``. Raises :class:`DataError` on a bad
    argument or a non-empty ``out_dir`` (unless ``overwrite`` and it holds only files this generator writes)."""
    import tifffile

    from plantpheno.files.atomic import atomic_write_text

    if layout not in LAYOUTS:
        raise DataError(f"layout: got {layout!r}; expected one of {', '.join(LAYOUTS)}")
    _check_int("per_class", per_class, 1)
    _check_int("image_size", image_size, 32, 1024)
    _check_int("seed", seed, 0)
    out = Path(out_dir)
    _prepare_out_dir(out, overwrite=overwrite, allowed=_PATHS)
    rows, traits = ["path,label,nir_path"], ["path,value" + (",nir_path" if layout == "per-band" else "")]
    for class_index, name in enumerate(MULTISPECTRAL_CLASSES):
        (out / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            rng = np.random.default_rng([seed, _TAG, class_index, i])
            pixels, share = _render(rng, image_size, stressed=class_index == 1, decoys=decoys)
            rel = f"{name}/{name}_{i:04d}.tif"
            if layout == "one-file":
                tifffile.imwrite(out / rel, pixels, photometric="minisblack", planarconfig="contig")
                traits.append(f"{rel},{share:.2f}")
                continue
            nir = f"{name}/{NIR_PATTERN.format(stem=f'{name}_{i:04d}')}"
            tifffile.imwrite(out / rel, pixels[:, :, :3], photometric="minisblack", planarconfig="contig")
            tifffile.imwrite(out / nir, pixels[:, :, 3], photometric="minisblack")
            rows.append(f"{rel},{name},{nir}")
            traits.append(f"{rel},{share:.2f},{nir}")
    if layout == "per-band":
        atomic_write_text(out / "labels.csv", "\n".join(rows) + "\n")
    atomic_write_text(out / "stress.csv", "\n".join(traits) + "\n")
    return out


def render_leaf(rng: np.random.Generator, size: int, *, stressed: bool, decoys: bool = True) -> np.ndarray:
    """One (size, size, 4) uint16 image: red, green, blue, NIR (``decoys=False``: without the visible spots, for
    ``benchmarks/adapter_diagnose.py``; the same leaves, the NIR patches elsewhere)."""
    return _render(rng, size, stressed=stressed, decoys=decoys)[0]


def _render(rng: np.random.Generator, size: int, *, stressed: bool, decoys: bool) -> tuple[np.ndarray, float]:
    """:func:`render_leaf`'s image, and the share of the leaf's pixels (in %) whose NIR dropped."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    image = _SOIL * rng.uniform(0.8, 1.2) + rng.normal(0, 0.02, (size, size, 1)) * np.array([1, 1, 1, 1.2])
    # an elliptic leaf at a random angle, with a midrib and shading from one side
    cy, cx = rng.uniform(0.4, 0.6, 2)
    angle = rng.uniform(0, np.pi)
    u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
    v = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
    a, b = rng.uniform(0.30, 0.42), rng.uniform(0.16, 0.24)
    leaf = (u / a) ** 2 + (v / b) ** 2 <= 1
    shade = 1 + 0.25 * u / a * rng.choice([-1, 1])
    tint = _LEAF * rng.uniform(0.85, 1.15, 4)
    tissue = tint * shade[..., None] * (1 - 0.25 * (np.abs(v) < 0.008)[..., None])
    tissue = tissue + rng.normal(0, 0.012, (size, size, 4))
    image[leaf] = tissue[leaf]
    # decoys, the same in both classes: darker spots in the visible bands only
    for _ in range(rng.integers(0, 4) if decoys else 0):
        spot = _blob(rng, xx, yy, a, b, cx, cy, angle, rng.uniform(0.03, 0.07)) & leaf
        image[spot, :3] *= rng.uniform(0.5, 0.8)
    dropped = np.zeros_like(leaf)
    if stressed:  # NIR drops in 2-5 patches; red, green and blue are untouched
        for _ in range(rng.integers(2, 6)):
            patch = _blob(rng, xx, yy, a, b, cx, cy, angle, rng.uniform(0.06, 0.12)) & leaf
            image[patch, 3] *= _STRESSED_NIR
            dropped |= patch
    share = 100.0 * float(dropped.sum()) / max(int(leaf.sum()), 1)
    return np.clip(np.rint(np.clip(image, 0, 1) * 65535), 0, 65535).astype(np.uint16), share


def _blob(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray, a: float, b: float, cx: float, cy: float,
          angle: float, radius: float) -> np.ndarray:
    """A round patch centred at a random point of the leaf."""
    r, t = np.sqrt(rng.uniform(0, 0.7)), rng.uniform(0, 2 * np.pi)
    u, v = r * a * np.cos(t), r * b * np.sin(t)
    px, py = cx + u * np.cos(angle) - v * np.sin(angle), cy + u * np.sin(angle) + v * np.cos(angle)
    return (xx - px) ** 2 + (yy - py) ** 2 <= radius**2

