"""Decoding images into RGB, and checking a dataset's files before any training starts.

Every image becomes an 8-bit RGB ``PIL.Image``: EXIF orientation is applied (phone photos of
leaves are often stored rotated), grayscale/palette/CMYK are converted, alpha is composited onto
black, and 16-bit or float images are rescaled to 8 bits.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import os
import re
import stat
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from plantpheno.errors import DataError
from plantpheno.data.doctor.pixels import QUALITY_SIDE, ImageStats, image_stats
from plantpheno.reporting import Reporter

log = logging.getLogger(__name__)

# The default of data.max_image_pixels. A decoded image holds 3 bytes per pixel, and the check pass decodes
# several at once: a 19000 x 19000 PNG of 351 KB took 3.2 GB and made epochs 10x slower (measured). 100 M
# pixels (300 MB decoded) still admits 50-100 MP camera and scanner images; raise the field for larger ones.
DEFAULT_MAX_PIXELS = 100_000_000
# PIL's own decompression-bomb guard (process-wide) warns past its limit and refuses twice that, when a file is
# opened: keep its warning above every limit plantpheno enforces with its own message, so that it only ever
# speaks about images plantpheno refuses anyway (never below PIL's default; the check is thread-safe this way,
# where silencing the warning per call would not be).
Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, 2 * DEFAULT_MAX_PIXELS)
# JPEGs are decoded at 1/2, 1/4 or 1/8 scale (PIL's draft mode, DCT scaling) when that still leaves this many
# times the pixels the model needs along the shorter side; the resize to the input size does the rest.
DRAFT_MARGIN = 2


class TooLarge(ValueError):
    """An image with more pixels than the configured limit (raised before it is decoded)."""

    def __init__(self, width: int | None, height: int | None, limit: int, pixels: int | None = None) -> None:
        self.width, self.height, self.limit = width, height, limit
        self.pixels = width * height if width is not None and height is not None else pixels
        size = f"{width} x {height} = " if width is not None else ""
        super().__init__(f"image too large: {size}{_mega(self.pixels)} pixels, above data.max_image_pixels = "
                         f"{_mega(limit)} (decoding it needs {_mega(3 * (self.pixels or limit))}B of memory); raise "
                         f"data.max_image_pixels to use it")


def _mega(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e6:.0f} M" if n >= 10**6 else f"{n:,}"


def allow_pixels(limit: int | None) -> None:
    """Raise PIL's process-wide decompression-bomb limit to twice ``limit``, so that images up to ``limit``
    pixels open without its warning; never lowers it."""
    if limit is not None and Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < 2 * limit:
        Image.MAX_IMAGE_PIXELS = 2 * limit


def open_image(source: str | os.PathLike[str] | io.BytesIO, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               min_side: int | None = None) -> Image.Image:
    """Open an image lazily, refusing it (:class:`TooLarge`) before decoding when it has more than
    ``max_pixels`` pixels (None: no limit). With ``min_side``, a JPEG is set to decode at the smallest
    1/2, 1/4 or 1/8 scale whose shorter side keeps ``DRAFT_MARGIN * min_side`` pixels."""
    try:
        img = Image.open(source)
    except Image.DecompressionBombError as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        limit = max_pixels if max_pixels is not None else 2 * (Image.MAX_IMAGE_PIXELS or 0)  # PIL's refusal point
        raise TooLarge(None, None, limit, int(found.group(1)) if found else None) from None
    width, height = img.size
    if max_pixels is not None and width * height > max_pixels:
        img.close()
        raise TooLarge(width, height, max_pixels)
    if min_side is not None:
        draft(img, min_side)
    return img


def draft(img: Image.Image, min_side: int) -> None:
    """Set a JPEG to decode at the smallest 1/2, 1/4 or 1/8 scale whose shorter side keeps
    ``DRAFT_MARGIN * min_side`` pixels (other formats: nothing)."""
    if img.format != "JPEG":
        return
    width, height = img.size
    short, need = min(width, height), DRAFT_MARGIN * min_side
    if short >= 2 * need:
        img.draft(None, (max(1, width * need // short), max(1, height * need // short)))


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


def load_rgb(path: str | os.PathLike[str], *, min_side: int | None = None,
             max_pixels: int | None = None) -> Image.Image:
    """Open an image file as 8-bit RGB (fully decoded). With ``min_side`` (the shorter side the consumer
    resizes to), a large JPEG is decoded at a reduced scale (:func:`open_image`). ``max_pixels`` refuses larger
    images (:class:`TooLarge`); the default trusts files that the check pass already admitted. A FIFO, device
    or socket is refused (:class:`NotRegularFile`) before it is opened: reading one would block or never end."""
    require_regular_file(path)
    with open_image(path, max_pixels=max_pixels, min_side=min_side) as img:
        img.load()
        return to_rgb(img)


def rgb_from_bytes(data: bytes, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                   min_side: int | None = None) -> Image.Image:
    """Decode an encoded image (JPEG, PNG, TIFF, ... file contents) as 8-bit RGB, under the same pixel limit as
    files (:func:`open_image`: refused before decoding; a 190 KB PNG can hold 196 M pixels = 590 MB decoded)."""
    with open_image(io.BytesIO(data), max_pixels=max_pixels, min_side=min_side) as img:
        img.load()
        return to_rgb(img)


def rgb_from_array(array: np.ndarray, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """An image array, channels last, as 8-bit RGB: ``(H, W)`` or ``(H, W, 1)`` grey, ``(H, W, 3)`` RGB or
    ``(H, W, 4)`` RGBA (alpha composited on black, as for files). ``uint8`` is taken as is; 16-bit by its range;
    floats in [0, 1] are scaled by 255 (other floats are read as 0-255). More than ``max_pixels`` pixels
    (:class:`TooLarge`) and NaN or infinite values (:class:`~plantpheno.errors.DataError`) are refused."""
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))) or 0 in arr.shape:
        raise DataError(f"image array of shape {tuple(arr.shape)}: expected (H, W), (H, W, 1), (H, W, 3) or "
                        f"(H, W, 4), channels last")
    if arr.dtype.kind not in "uif" and arr.dtype != np.bool_:
        raise DataError(f"image array of dtype {arr.dtype}: expected unsigned/signed integers or floats")
    if max_pixels is not None and arr.shape[0] * arr.shape[1] > max_pixels:
        raise TooLarge(arr.shape[1], arr.shape[0], max_pixels)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise DataError(f"image array holds {bad:,} NaN or infinite value(s) of {arr.size:,}: expected finite pixel "
                        f"values (0-1 or 0-255)")
    if arr.dtype != np.uint8:
        arr = _rescale_to_uint8(arr.astype(np.float64) if arr.dtype == np.bool_ else arr,
                                sixteen_bit=arr.dtype == np.uint16)
    return to_rgb(Image.fromarray(np.ascontiguousarray(arr)))


class NotRegularFile(DataError):
    """A path that is a FIFO, device, socket or folder, not an image file (opening one can block forever)."""


def require_regular_file(path: str | os.PathLike[str]) -> None:
    """Refuse anything but a regular file (a link to one is fine) before it is opened: a FIFO blocks the
    reader until a writer comes, a device may never end. A missing file is left to the opener's own error."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if not stat.S_ISREG(mode):
        raise NotRegularFile(f"{path} is {_kind(mode)}, not an image file")


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "a special file"


@dataclass(frozen=True)
class ImageCheck:
    """Result of checking one file: its content hash and the data checks' measures of its pixels, or why it
    cannot be used."""

    path: Path
    sha256: str | None
    problem: str | None
    stats: ImageStats | None = None
    band_stats: Any = None  # with data.bands: the per-band measures (plantpheno.data.band_stats.BandImageStats)


def check_image(path: Path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ImageCheck:
    """Read, hash and fully decode one file, and measure its pixels for the data checks (in the same decode);
    report a problem instead of raising.

    A large JPEG is decoded at a reduced scale (1/2 to 1/8) that keeps at least the data checks' working size
    (``QUALITY_SIDE``, to which their measures shrink an image) on its shorter side: that still reads and
    entropy-decodes all of its data (so a truncated or corrupt file is caught) at a fraction of the time and
    memory, and the measures see the scale they work at."""
    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):  # a FIFO would block the read (and the whole check pass) forever
            return ImageCheck(path, None, f"is {_kind(mode)}, not an image file")
        data = path.read_bytes()
    except FileNotFoundError:
        return ImageCheck(path, None, "file not found" if not path.is_symlink() else "broken symbolic link")
    except IsADirectoryError:
        return ImageCheck(path, None, "is a directory, not an image file")
    except OSError as exc:
        return ImageCheck(path, None, f"cannot read file ({exc.strerror or exc})")
    if not data:
        return ImageCheck(path, None, "empty file (0 bytes)")
    digest = hashlib.sha256(data).hexdigest()
    try:
        with open_image(io.BytesIO(data), max_pixels=max_pixels) as img:
            size = img.size  # the file's own size, before a reduced-scale decode
            draft(img, QUALITY_SIDE // DRAFT_MARGIN)  # the shorter side keeps >= QUALITY_SIDE pixels
            decoded = img.size
            img.load()
            rgb = to_rgb(img)
            if rgb.width < 1 or rgb.height < 1:
                return ImageCheck(path, digest, "image has no pixels")
            if rgb.size != decoded:  # EXIF orientation turned it a quarter
                size = size[::-1]
    except TooLarge as exc:
        return ImageCheck(path, digest, str(exc))
    except UnidentifiedImageError:
        return ImageCheck(path, digest, "not an image (format not recognised)")
    except Exception as exc:  # noqa: BLE001 - decoders of corrupt files raise TypeError, struct.error, EOFError ...
        return ImageCheck(path, digest, f"truncated or corrupt image ({str(exc) or type(exc).__name__})")
    return ImageCheck(path, digest, None, _measure(rgb, path, size))


def _measure(rgb: Image.Image, path: Path, size: tuple[int, int]) -> ImageStats | None:
    """The data checks' measures; a failure there is not the file's fault: the checks go without them."""
    try:
        return image_stats(rgb, size=size)
    except Exception as exc:  # noqa: BLE001 - never turn a good image into a "corrupt" one
        log.warning("could not measure %s for the data checks: %s", path, exc)
        return None


def check_images(paths: Sequence[Path], *, workers: int | None = None, memo: Path | None = None,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS, reporter: Reporter | None = None,
                 check: Callable[[Path], ImageCheck] | None = None) -> list[ImageCheck]:
    """Check many files in parallel threads (decoding releases the GIL); results keep input order.

    With ``memo`` (a JSON file), a file that passed before and still has the same size and modification
    time (ns) is not decoded again: its recorded hash and pixel measures are reused (a file recorded without
    measures of the current version is decoded again), and newly passed files are added. Files with a problem
    are always checked afresh, and so is every file when the memo was written under a higher ``max_pixels``.
    Like make or rsync, this trusts size + mtime; delete the memo file to force a full re-check. ``reporter``
    shows the progress of the files decoded. ``check`` replaces :func:`check_image` (band data: see
    :func:`plantpheno.data.bands.check_band_file`).
    """
    allow_pixels(max_pixels)
    known = _read_memo(memo, max_pixels) if memo is not None else {}
    results: list[ImageCheck | None] = [None] * len(paths)
    todo: list[int] = []
    stats: dict[int, tuple[int, int]] = {}
    for i, path in enumerate(paths):
        try:
            st = path.stat()
        except OSError:
            todo.append(i)
            continue
        stats[i] = (st.st_size, st.st_mtime_ns)
        hit = known.get(str(path.absolute()))
        measured = ImageStats.from_json(hit[3]) if hit is not None and len(hit) > 3 else None
        if hit is not None and (hit[0], hit[1]) == stats[i] and measured is not None:
            results[i] = ImageCheck(path, hit[2], None, measured)
        else:
            todo.append(i)
    bar = reporter.progress(total=len(todo), desc="checking images", unit="img") if reporter and todo else None
    for i, checked in zip(todo, _check_all([paths[i] for i in todo], workers, max_pixels, check)):
        results[i] = checked
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if memo is not None and todo:
        for i in todo:
            check = results[i]
            if check is not None and check.problem is None and i in stats:
                known[str(paths[i].absolute())] = [*stats[i], check.sha256,
                                                   check.stats.to_json() if check.stats else None]
        _write_memo(memo, known, max_pixels)
    assert all(r is not None for r in results)  # each path came from the memo or was checked
    return results  # type: ignore[return-value]


def _check_all(paths: Sequence[Path], workers: int | None, max_pixels: int | None,
               check: Callable[[Path], ImageCheck] | None = None) -> Iterator[ImageCheck]:
    """The checks in input order, as each is done (a progress bar can follow them)."""
    workers = workers or min(8, os.cpu_count() or 1)
    check = check or functools.partial(check_image, max_pixels=max_pixels)
    if len(paths) < 64 or workers == 1:
        yield from (check(p) for p in paths)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(check, paths, chunksize=32)


def _read_memo(path: Path, max_pixels: int | None) -> dict[str, list]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # absent or unreadable: check everything (and rewrite it)
    if not isinstance(data, dict) or data.get("version") != _MEMO_VERSION or not isinstance(data.get("files"), dict):
        return {}
    admitted = data.get("max_pixels", "unknown")  # memos before the pixel limit did not record it
    if admitted == "unknown" or (max_pixels is not None and (admitted is None or admitted > max_pixels)):
        return {}  # files passed under a looser limit: check them again under this one
    return data["files"]


def _write_memo(path: Path, files: dict[str, list], max_pixels: int | None) -> None:
    from plantpheno.files.atomic import atomic_write_text
    from plantpheno.errors import StorageError

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps({"version": _MEMO_VERSION, "max_pixels": max_pixels, "files": files}))
    except (OSError, StorageError) as exc:  # a read-only output folder only costs the speed-up
        log.warning("could not save the image check memo %s: %s", path, exc)


_MEMO_VERSION = 1
