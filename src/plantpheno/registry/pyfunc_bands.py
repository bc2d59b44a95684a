"""The served MLflow model of a one-file-per-band model (``data.bands`` with ``column`` or ``pattern``, issue 31).

Such a model reads some bands from files of their own, so a request carries them beside ``image``: one column per
band file, named after the band (``nir``), holding the file's bytes (base64 text in a JSON request, as ``image``), or
a column ``<band>_path`` (``nir_path``) naming the file inside model_config ``allowed_image_dir``, as ``path`` does
for the image. A band of a ``pattern`` may also be left out when the row gives ``path``: its file is then the
pattern's name next to that image, read inside the same folder. A request without any column for a band is refused
(HTTP 400) naming the band and the columns it could come in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from plantpheno.band_config import BandSpec
from plantpheno.registry.package import ModelPackage

PATH_SUFFIX = "_path"


def file_bands(package: ModelPackage) -> tuple[BandSpec, ...]:
    """The bands the package reads from files of their own (none for an RGB model or one file per image)."""
    from plantpheno.data.bands import bands_from_meta

    found = bands_from_meta(package.meta)
    return tuple(b for b in found[0] if b.file_source) if found is not None else ()


def reads_image(package: ModelPackage) -> bool:
    """Whether requests need the ``image`` (or ``path``) column: RGB models, and band models with a band of the
    image file itself."""
    from plantpheno.data.bands import bands_from_meta

    found = bands_from_meta(package.meta)
    return found is None or any(b.in_image for b in found[0])


def missing_band_columns(frame: pd.DataFrame, bands: tuple[BandSpec, ...]) -> str | None:
    """The one message for a request that lacks a band's column (None when every band has one)."""
    missing = []
    for band in bands:
        name = band.name.lower()
        if name in frame.columns or f"{name}{PATH_SUFFIX}" in frame.columns:
            continue
        if band.pattern is not None and "path" in frame.columns:
            continue  # found next to the row's path by its pattern
        missing.append(band)
    if not missing:
        return None
    listed = "; ".join(f"band {b.name.lower()!r}: a column {b.name.lower()!r} (the band file's bytes; base64 in "
                       f"JSON) or {b.name.lower() + PATH_SUFFIX!r} (its file inside allowed_image_dir)" +
                       (f", or 'path' (its file found by the pattern {b.pattern!r})" if b.pattern else "")
                       for b in missing)
    return (f"this model reads {len(missing)} band(s) from files of their own, not in the request: {listed}; got "
            f"columns {list(frame.columns)}")


def row_band_files(frame: pd.DataFrame, row: int, bands: tuple[BandSpec, ...], allowed: Path | None,
                   *, read_bytes: Any, read_path: Any) -> dict[str, bytes]:
    """The band files of one input row, by band name: bytes sent, or files read inside ``allowed``
    (``read_bytes``/``read_path``: the pyfunc's readers of ``image`` and ``path``, with their limits)."""
    files: dict[str, bytes] = {}
    for band in bands:
        name = band.name.lower()
        value = _cell(frame, name, row)
        if value is not None:
            files[name] = read_bytes(value, f"'{name}'")
            continue
        path = _cell(frame, name + PATH_SUFFIX, row)
        if path is None and band.pattern is not None:
            image = _cell(frame, "path", row)
            if isinstance(image, str) and image:
                image_path = Path(image)
                path = str(image_path.parent / band.pattern.format(stem=image_path.stem, name=image_path.name,
                                                                   suffix=image_path.suffix))
        if path is None:
            raise ValueError(f"no file for band {name!r} (neither {name!r} nor {name + PATH_SUFFIX!r} is given"
                             + (", nor 'path' for its pattern" if band.pattern else "") + ")")
        if allowed is None:
            raise ValueError(f"{name + PATH_SUFFIX!r} inputs are refused: this model was served without model_config "
                             f"allowed_image_dir; send the band file's bytes in the {name!r} column")
        files[name] = read_path(str(path), allowed)
    return files


def _cell(frame: pd.DataFrame, column: str, row: int) -> Any:
    if column not in frame.columns:
        return None
    value = frame[column].iloc[row]
    if isinstance(value, (bytes, bytearray, memoryview, str)):
        return value if len(value) else None
    return None if value is None or pd.isna(value) else value


def band_columns(package: ModelPackage) -> list[Any]:
    """The signature's band columns: ``<band>`` (binary) and ``<band>_path`` (string), optional (either may be
    given; the pyfunc names a band that has neither)."""
    from mlflow.types import ColSpec

    columns = []
    for band in file_bands(package):
        name = band.name.lower()
        columns += [ColSpec("binary", name, required=False), ColSpec("string", name + PATH_SUFFIX, required=False)]
    return columns


def example_band_files(package: ModelPackage) -> dict[str, list[bytes]]:
    """The input example's band columns: per band file a small TIFF holding the band (at its training mean) in
    the channel the band reads, the size of ``image``'s example."""
    import io

    import numpy as np
    import tifffile

    from plantpheno.data.bands import bands_from_meta

    found = bands_from_meta(package.meta)
    if found is None:
        return {}
    columns = {}
    bands, norm = found
    for band, mean in zip(bands, norm.mean):
        if band.file_source:
            pixels = np.full((32, 32, (band.channel or 0) + 1), mean, dtype=np.float32)
            buf = io.BytesIO()
            if pixels.shape[2] == 1:  # one sample: a plain grey TIFF (tifffile takes no planar layout for it)
                tifffile.imwrite(buf, pixels[:, :, 0], photometric="minisblack")
            else:
                tifffile.imwrite(buf, pixels, photometric="minisblack", planarconfig="contig")
            columns[band.name.lower()] = [buf.getvalue()]
    return columns
