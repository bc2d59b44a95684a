"""Procedural synthetic plant images for tests, demos and smoke-training without real data.

:func:`synthesize_disease` writes an image-folder classification dataset of single leaves (healthy,
leaf spot, rust, blight) on class-independent backgrounds; :func:`synthesize_rosettes` writes a
leaf-count regression dataset of top-down rosettes (several views per plant) with ``labels.csv``.
Both are deterministic by seed: each image has its own generator seeded from ``(seed, kind,
index...)``, so it does not depend on generation order. Scenes are drawn at 2x and downsampled
with LANCZOS for anti-aliasing.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageFilter

from plantpheno.data.synth_draw import Array, potting_soil, render_disease, render_rosette, sample_plant
from plantpheno.data.synth_field import STYLES, field_generator, fieldify
from plantpheno.errors import DataError
from plantpheno.files.atomic import atomic_write_text

DISEASE_CLASSES: tuple[str, ...] = ("healthy", "leaf_spot", "rust", "blight")

_JPEG_QUALITY = 92
_TAG_DISEASE, _TAG_PLANT, _TAG_VIEW, _TAG_DEFECTS = 1, 2, 3, 4
_CLASS_NAMES = "|".join(DISEASE_CLASSES)
# Relative paths each generator writes; with overwrite=True, anything else in out_dir is refused.
_DISEASE_PATHS = re.compile(rf"(?P<c>{_CLASS_NAMES})(/(?P=c)_\d{{4,}}(_dup|_near)?\.jpg"
                            rf"|/({_CLASS_NAMES})_\d{{4,}}_(conflict|flip)\.jpg)?"
                            r"|labels\.csv|defects\.json|\.(labels\.csv|defects\.json)\..+\.tmp")
_ROSETTE_PATHS = re.compile(r"images(/plant\d{3,}_view\d+\.jpg)?|labels\.csv|\.labels\.csv\..+\.tmp")


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
            masks: dict[str, Array] = {}
            canvas = render_disease(rng, class_index, _canvas_size(image_size), masks=masks,
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
        plant = sample_plant(np.random.default_rng([seed, _TAG_PLANT, p]), min_leaves, max_leaves)
        soil = potting_soil(plant, _canvas_size(image_size))
        for v in range(views_per_plant):
            rng = np.random.default_rng([seed, _TAG_VIEW, p, v])
            rel = f"images/plant{p:03d}_view{v}.jpg"
            _save_jpeg(_finish(rng, render_rosette(rng, plant, soil.copy()), image_size), out / rel)
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


def _finish(rng: np.random.Generator, canvas: Array, image_size: int) -> Image.Image:
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


def disease_example(class_name: str, index: int, *, image_size: int = 96,
                    seed: int = 0) -> tuple[Image.Image, npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Image ``index`` of ``class_name`` exactly as :func:`synthesize_disease` writes it (before JPEG), with
    its lesion and leaf masks (``(H, W)`` in 0..1 at ``image_size``): ground truth for where a model should look."""
    if class_name not in DISEASE_CLASSES:
        raise DataError(f"unknown class {class_name!r}; expected one of {', '.join(DISEASE_CLASSES)}")
    class_index = DISEASE_CLASSES.index(class_name)
    rng = np.random.default_rng([seed, _TAG_DISEASE, class_index, index])
    masks: dict[str, Array] = {}
    canvas = render_disease(rng, class_index, _canvas_size(image_size), masks=masks)
    image = _finish(rng, canvas, image_size)

    def shrink(mask: Array) -> npt.NDArray[np.float32]:
        img = Image.fromarray(np.clip(mask * 255, 0, 255).astype(np.uint8))
        return np.asarray(img.resize((image_size, image_size), Image.Resampling.BILINEAR), np.float32) / 255

    return image, shrink(masks["lesion"]), shrink(masks["leaf"])
