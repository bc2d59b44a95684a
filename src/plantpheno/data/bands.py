"""Reading the bands of ``data.bands`` from one multi-band file per image, and normalising them per band.

An image file becomes a float32 ``(H, W, C)`` array of the configured bands, in their order, with the file's own
values: a 16-bit band keeps its 65,536 levels (float32 holds every integer up to 2**24 exactly), a float band its
values; nothing goes through 8 bits. Files:

* TIFF (``tifffile``): multi-page (one band per page) or multi-sample (planar or interleaved), any dtype;
* ``.npy`` / ``.npz``: an array ``(H, W)`` or ``(H, W, C)``, channels last (an ``.npz`` holds one array, or one
  named ``image``);
* anything PIL reads (PNG, JPEG, ...): its channels (R, G, B of a false-colour composite, or grey), EXIF
  orientation applied.

A band may come from a file of its own (``column`` or ``pattern`` in its spec): its file is read the same way and
its channel stacked with the others; every file of one image must have the same height and width.

Each band is then scaled by statistics of the training split (:class:`BandNorm`): clipped to robust percentiles
(a few saturated or dead pixels do not stretch the scale) and standardised by the mean and standard deviation of
the clipped values.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from plantpheno.band_config import BandSpec
from plantpheno.data.band_stats import measure_bands
from plantpheno.data.images import DEFAULT_MAX_PIXELS, ImageCheck, TooLarge, require_regular_file
from plantpheno.records.model_meta import BandsMeta, ModelMeta
from plantpheno.errors import DataError

TIFF_SUFFIXES = (".tif", ".tiff")
ARRAY_SUFFIXES = (".npy", ".npz")
# robust range of a band: values outside the training split's 1st-99th percentiles are clipped before the mean
# and standard deviation are taken (and before every image is standardised)
PERCENTILES = (1.0, 99.0)
STATS_IMAGES = 256  # training images sampled for the statistics (all of them when there are fewer)
STATS_PIXELS = 4096  # pixels sampled per image


class BandError(DataError):
    """An image file that does not hold the configured bands (too few channels, NaN values, unreadable)."""


class BandCountError(BandError):
    """An image with fewer bands than ``data.bands`` (or a model package) reads from it."""


def read_raw(source: str | os.PathLike[str] | bytes, *, max_pixels: int | None = DEFAULT_MAX_PIXELS
             ) -> np.ndarray:
    """A file's (or its encoded bytes') pixels as ``(H, W, C)`` in their own dtype; the format is recognised by
    its first bytes (see the module's docstring for the formats)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, name = io.BytesIO(bytes(source)), "image bytes"
        head = bytes(source[:8])
    else:
        require_regular_file(source)
        data, name = Path(source), str(source)
        with open(source, "rb") as f:
            head = f.read(8)
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):  # TIFF and BigTIFF
        arr = _read_tiff(data, name, max_pixels)
    elif head.startswith(b"\x93NUMPY") or head.startswith(b"PK"):
        arr = _read_array(data, name, max_pixels, archive=head.startswith(b"PK"))
    else:
        arr = _read_pil(data, name, max_pixels)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or 0 in arr.shape:
        raise BandError(f"{name}: pixels of shape {tuple(arr.shape)}; expected (H, W) or (H, W, C)")
    if arr.dtype.kind not in "uifb":
        raise BandError(f"{name}: pixels of dtype {arr.dtype}; expected integers or floats")
    return arr


def _limit(height: int, width: int, max_pixels: int | None) -> None:
    if max_pixels is not None and height * width > max_pixels:
        raise TooLarge(width, height, max_pixels)


def _read_tiff(path: Path | io.BytesIO, name: str, max_pixels: int | None) -> np.ndarray:
    import tifffile  # imported here: only band data needs it

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        axes, shape = series.axes, series.shape
        if "Y" not in axes or "X" not in axes:
            raise BandError(f"{name}: a TIFF of axes {axes}; expected an image with Y and X axes")
        _limit(shape[axes.index("Y")], shape[axes.index("X")], max_pixels)
        if axes == "YX" and len(tif.series) > 1:  # one page per band, each its own series
            pages = [s.asarray() for s in tif.series]
            if any(p.shape != pages[0].shape for p in pages):
                sizes = sorted({p.shape for p in pages})
                raise BandError(f"{name}: its pages have different sizes {sizes}; expected one size for every band")
            return np.stack(pages, axis=-1)
        arr = series.asarray()
    extra = [i for i, a in enumerate(axes) if a not in "YX"]
    if len(extra) > 1:
        squeeze = tuple(i for i in extra if arr.shape[i] == 1)
        arr = np.squeeze(arr, axis=squeeze) if squeeze else arr
        axes = "".join(a for i, a in enumerate(axes) if i not in squeeze)
        extra = [i for i, a in enumerate(axes) if a not in "YX"]
        if len(extra) > 1:
            raise BandError(f"{name}: a TIFF of axes {axes} {tuple(arr.shape)}; expected one band axis (pages or "
                            f"samples) besides Y and X")
    order = [axes.index("Y"), axes.index("X"), *extra]
    return np.transpose(arr, order)


def _read_array(path: Path | io.BytesIO, name: str, max_pixels: int | None, *, archive: bool) -> np.ndarray:
    try:
        if not archive:
            arr = np.load(path, mmap_mode="r" if isinstance(path, Path) else None, allow_pickle=False)
        else:
            with np.load(path, allow_pickle=False) as archive:
                names = list(archive.keys())
                key = names[0] if len(names) == 1 else "image" if "image" in names else None
                if key is None:
                    raise BandError(f"{name}: holds arrays {', '.join(names) or '(none)'}; expected one array, or one "
                                    f"named 'image'")
                arr = archive[key]
    except (ValueError, OSError, EOFError) as exc:
        raise BandError(f"{name}: not a readable numpy array ({exc})") from None
    if arr.ndim in (2, 3):
        _limit(arr.shape[0], arr.shape[1], max_pixels)
    return np.asarray(arr)


def _read_pil(path: Path | io.BytesIO, name: str, max_pixels: int | None) -> np.ndarray:
    from PIL import ImageOps, UnidentifiedImageError

    from plantpheno.data.images import open_image

    try:
        with open_image(path, max_pixels=max_pixels) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            if img.mode == "P":
                img = img.convert("RGB")
            return np.asarray(img)
    except UnidentifiedImageError:
        raise BandError(f"{name}: not an image (format not recognised)") from None


def require_channels(arr: np.ndarray, bands: Sequence[BandSpec], source: object) -> None:
    """Raises :class:`BandCountError` when an ``(H, W, C)`` image lacks a channel its bands read."""
    channels = arr.shape[2]
    needed = max((b.channel for b in bands if b.in_image), default=0)
    if needed >= channels:
        missing = [f"{b.name} (channel {b.channel})" for b in bands if b.in_image and b.channel >= channels]
        raise BandCountError(f"{source}: has {channels} band(s); data.bands needs {', '.join(missing)}: expected at "
                             f"least {needed + 1} bands")


def select_bands(arr: np.ndarray, bands: Sequence[BandSpec], *, source: object = "image") -> np.ndarray:
    """The configured bands of a raw ``(H, W, C)`` array as float32 ``(H, W, len(bands))``.

    Raises:
        BandError: too few channels (naming the band that is missing), NaN or infinite values.
    """
    if arr.ndim == 2:
        arr = arr[:, :, None]
    require_channels(arr, bands, source)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise BandError(f"{source}: {bad:,} NaN or infinite pixel value(s); expected finite values in every band "
                        f"(mask or fill them before training)")
    read = {b.name.lower(): arr[:, :, b.channel].astype(np.float32) for b in bands if b.channel is not None}
    out = np.empty((*arr.shape[:2], len(bands)), dtype=np.float32)
    for i, band in enumerate(bands):
        if band.difference is None:
            out[:, :, i] = read[band.name.lower()]
        else:
            a, b = (read[n.lower()] for n in band.difference)
            total = a + b
            with np.errstate(divide="ignore", invalid="ignore"):
                out[:, :, i] = np.where(total != 0, (a - b) / np.where(total != 0, total, 1), 0)
    return out


Companions = Mapping[str, "str | os.PathLike[str] | bytes"]
"""The files of bands read from files of their own, by band name (from a manifest's columns, or given to predict)."""


def band_file(image: str | os.PathLike[str] | None, band: BandSpec, companions: Companions | None = None
              ) -> str | os.PathLike[str] | bytes:
    """The file a band of its own file is read from: given in ``companions`` (a manifest column, an API dict), or
    its ``pattern`` next to ``image``.

    Raises:
        BandCountError: a band of a manifest column with no file given for it (like too few bands, it concerns
            every image given the same way: prediction stops with one message instead of one per file).
    """
    given = (companions or {}).get(band.name.lower())
    if given is not None:
        return given
    if band.pattern is not None and image is not None:
        image = Path(image)
        return image.parent / band.pattern.format(stem=image.stem, name=image.name, suffix=image.suffix)
    raise BandCountError(f"{image or 'image'}: no file for band {band.name!r} (data.bands reads it from the manifest column "
                    f"{band.column!r}); expected its file with the image (in Python: a dict "
                    f"{{'image': path, {band.name.lower()!r}: path}})")


def stacked_raw(image: str | os.PathLike[str] | bytes | None, bands: Sequence[BandSpec], *,
                companions: Companions | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                dtypes: dict[str, str] | None = None) -> tuple[np.ndarray, tuple[BandSpec, ...]]:
    """The image file's channels with one channel per band file stacked after them, and ``bands`` re-pointed
    at that stack: :func:`select_bands` then reads all of them as one array. ``dtypes`` (if given) receives the
    sample type of each band's file, by band name.

    Raises:
        BandError: a band file that is missing, lacks the channel its band reads, or differs in height or width
            from the image (both files and sizes are named).
    """
    image_name = "image bytes" if isinstance(image, (bytes, bytearray, memoryview)) else str(image)
    first = read_raw(image, max_pixels=max_pixels) if any(b.in_image for b in bands) else None
    if first is not None:  # before the band files are stacked after its channels
        require_channels(first, bands, image_name)
    layers = [first.astype(np.float32, copy=False)] if first is not None else []
    reference = (image_name, first.shape[:2]) if first is not None else None
    if dtypes is not None and first is not None:
        dtypes.update({b.name.lower(): str(first.dtype) for b in bands if b.in_image})
    specs, extra = [], 0 if first is None else first.shape[2]
    for band in bands:
        if band.file_source is None:
            specs.append(band)
            continue
        source = band_file(image if not isinstance(image, (bytes, bytearray, memoryview)) else None, band, companions)
        name = "band bytes" if isinstance(source, (bytes, bytearray, memoryview)) else str(source)
        if not isinstance(source, (bytes, bytearray, memoryview)) and not Path(source).exists():
            raise BandError(f"{image_name}: the file of band {band.name!r} ({name}) does not exist" +
                            (f" (data.bands pattern {band.pattern!r})" if band.pattern else ""))
        raw = read_raw(source, max_pixels=max_pixels)
        if band.channel is not None and band.channel >= raw.shape[2]:
            raise BandCountError(f"{name}: has {raw.shape[2]} band(s); band {band.name!r} reads its channel "
                                 f"{band.channel}: expected at least {band.channel + 1}")
        if reference is None:
            reference = (name, raw.shape[:2])
        elif raw.shape[:2] != reference[1]:
            (h0, w0), (h, w) = reference[1], raw.shape[:2]
            raise BandError(f"{name}: {w}x{h} pixels (width x height), but {reference[0]}: {w0}x{h0}; expected "
                            f"every band file of an image to have the same size")
        if raw.dtype.kind == "f" and not np.isfinite(raw[:, :, band.channel]).all():
            bad = int(np.count_nonzero(~np.isfinite(raw[:, :, band.channel])))
            raise BandError(f"{name}: {bad:,} NaN or infinite pixel value(s) in band {band.name!r}; expected finite "
                            f"values (mask or fill them before training)")
        layers.append(raw[:, :, band.channel].astype(np.float32)[:, :, None])
        if dtypes is not None:
            dtypes[band.name.lower()] = str(raw.dtype)
        specs.append(band.model_copy(update={"channel": extra, "column": None, "pattern": None}))
        extra += 1
    return np.concatenate(layers, axis=2), tuple(specs)


def read_bands(path: str | os.PathLike[str], bands: Sequence[BandSpec], *,
               max_pixels: int | None = DEFAULT_MAX_PIXELS, companions: Companions | None = None,
               dtypes: dict[str, str] | None = None) -> np.ndarray:
    """The configured bands of an image file (and of its band files, ``companions`` or patterns) as float32
    ``(H, W, len(bands))`` (:func:`read_raw`, :func:`select_bands`); ``dtypes`` (if given) receives the sample
    type of each band's file, by band name."""
    if not any(b.file_source for b in bands):
        raw = read_raw(path, max_pixels=max_pixels)
        if dtypes is not None:
            dtypes.update({b.name.lower(): str(raw.dtype) for b in bands if b.in_image})
        return select_bands(raw, bands, source=path)
    raw, specs = stacked_raw(path, bands, companions=companions, max_pixels=max_pixels, dtypes=dtypes)
    return select_bands(raw, specs, source=path)


def band_files_of(path: Path, bands: Sequence[BandSpec], companions: Companions | None = None) -> list[Path]:
    """The band files of an image (from ``companions`` or patterns), in band order; those it cannot name left out."""
    found = []
    for band in bands:
        if band.file_source is not None:
            try:
                found.append(Path(band_file(path, band, companions)))  # type: ignore[arg-type]
            except BandError:
                continue
    return found


def drop_band_files(paths: Sequence[Path], bands: Sequence[BandSpec] | None) -> list[Path]:
    """``paths`` without the band files (by pattern) of other paths in it: a folder's ``leaf_NIR.tif`` is the NIR
    band of ``leaf.tif``, not an image of its own."""
    if not bands or not any(b.pattern for b in bands):
        return list(paths)
    companions = {p for path in paths for p in band_files_of(path, [b for b in bands if b.pattern])}
    return [p for p in paths if p not in companions]


def check_band_file(path: Path, bands: Sequence[BandSpec], *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                    companions_of: Mapping[Path, Companions] | None = None) -> ImageCheck:
    """The check pass for band data: read and hash ``path`` (and its band files: ``companions_of[path]`` or
    patterns) and read its bands; report a problem instead of raising (band count, dtype, NaN, a missing band file
    and band files of different sizes are named in it)."""
    companions = (companions_of or {}).get(path)
    digest_of = hashlib.sha256()
    for file in [path, *band_files_of(path, bands, companions)]:
        try:
            if not stat.S_ISREG(file.stat().st_mode):
                return ImageCheck(path, None, f"{'' if file == path else f'band file {file} is '}not a regular file")
            digest_of.update(file.read_bytes())
        except FileNotFoundError:
            continue  # named below by the reader (which band's file it is)
        except OSError as exc:
            return ImageCheck(path, None, f"cannot read {'file' if file == path else file} ({exc.strerror or exc})")
    digest = digest_of.hexdigest()
    dtypes: dict[str, str] = {}
    try:
        pixels = read_bands(path, bands, max_pixels=max_pixels, companions=companions, dtypes=dtypes)
    except (BandError, TooLarge) as exc:
        message = str(exc)
        return ImageCheck(path, digest, message[len(f"{path}: "):] if message.startswith(f"{path}: ") else message)
    except Exception as exc:  # noqa: BLE001 - decoders of corrupt files raise many kinds
        return ImageCheck(path, digest, f"truncated or corrupt image ({str(exc) or type(exc).__name__})")
    return ImageCheck(path, digest, None, band_stats=measure_bands(pixels, [b.name.lower() for b in bands], dtypes))


@dataclass(frozen=True)
class BandNorm:
    """Per-band scaling learnt on the training split: clip to ``[low, high]``, then ``(x - mean) / std``."""

    names: tuple[str, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """``(H, W, C)`` float32 bands -> clipped and standardised, same shape."""
        low, high = np.asarray(self.low, np.float32), np.asarray(self.high, np.float32)
        mean, std = np.asarray(self.mean, np.float32), np.asarray(self.std, np.float32)
        return (np.clip(pixels, low, high) - mean) / std

    def to_json(self) -> dict[str, Any]:
        return {"names": list(self.names), "percentiles": list(PERCENTILES), "low": list(self.low),
                "high": list(self.high), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BandNorm:
        return cls(*(tuple(data[k]) for k in ("names", "low", "high", "mean", "std")))


def band_statistics(paths: Sequence[Path], bands: Sequence[BandSpec], *, seed: int = 0,
                    companions_of: Mapping[Path, Companions] | None = None) -> BandNorm:
    """:class:`BandNorm` from up to ``STATS_IMAGES`` of ``paths`` (the training split), ``STATS_PIXELS`` random
    pixels of each; the same paths and seed always give the same statistics (a resumed run or an evaluation
    recomputes them exactly)."""
    rng = np.random.default_rng(seed)
    chosen = sorted(paths, key=str)
    if len(chosen) > STATS_IMAGES:
        chosen = [chosen[i] for i in sorted(rng.choice(len(chosen), STATS_IMAGES, replace=False))]
    samples = []
    for path in chosen:
        companions = (companions_of or {}).get(path)
        pixels = read_bands(path, bands, max_pixels=None, companions=companions).reshape(-1, len(bands))
        take = rng.choice(len(pixels), min(STATS_PIXELS, len(pixels)), replace=False)
        samples.append(pixels[np.sort(take)].astype(np.float64))
    if not samples:
        raise DataError("no training images to compute the band statistics from")
    values = np.concatenate(samples)
    low, high = np.percentile(values, PERCENTILES, axis=0)
    clipped = np.clip(values, low, high)
    mean, std = clipped.mean(axis=0), clipped.std(axis=0)
    std = np.where(std > 0, std, 1.0)  # a constant band: centred, not scaled
    return BandNorm(tuple(b.name.lower() for b in bands), *(tuple(float(v) for v in a) for a in (low, high, mean, std)))


def band_check(bands: Sequence[BandSpec] | None, max_pixels: int | None,
               companions_of: Mapping[Path, Companions] | None = None) -> Callable[[Path], ImageCheck] | None:
    """The check pass's reader for ``data.bands`` (None for RGB, which :func:`~plantpheno.data.images.check_image`
    checks); ``companions_of``: the band files a manifest names, by image."""
    return None if bands is None else functools.partial(check_band_file, bands=tuple(bands), max_pixels=max_pixels,
                                                        companions_of=companions_of)


def band_meta(bands: Sequence[BandSpec] | None, norm: BandNorm | None, adapter: str | None) -> dict[str, Any] | None:
    """The ``bands`` block a checkpoint and a model package record of ``data.bands`` (None for RGB, so RGB
    metadata stays as it was): ``{"specs": [...], "names", "low", "high", "mean", "std", "percentiles",
    "input_adapter"}``. Predict reads the files and scales the bands from it."""
    if bands is None or norm is None:
        return None
    specs = [b.model_dump(mode="json", exclude_none=True) for b in bands]
    return {"specs": specs, **norm.to_json(), "input_adapter": adapter}


def bands_from_meta(meta: ModelMeta) -> tuple[tuple[BandSpec, ...], BandNorm] | None:
    """The band specs and scaling a checkpoint or package records (None: an RGB model)."""
    if not isinstance(meta.bands, BandsMeta):
        return None
    block = meta.bands.model_dump(mode="json")
    return tuple(BandSpec.model_validate(s) for s in meta.bands.specs), BandNorm.from_json(block)
