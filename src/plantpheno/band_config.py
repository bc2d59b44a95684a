"""The schema of ``data.bands``: which channels the model sees and where each one comes from.

A band is a named channel. It is read from a file (``channel``: its index in a multi-band TIFF, an (H, W, C)
``.npy``/``.npz`` array, or the R, G, B of a false-colour PNG/JPEG) or derived from two other bands as their
normalised difference ``(a - b) / (a + b)`` (``difference: [a, b]``; ``ndvi`` is ``[nir, red]``). Names are what
the model's first layer is matched by (:mod:`plantpheno.models.input_adapter`): ``red``, ``green`` and ``blue``
receive a pretrained network's RGB filters, whatever their channel index.

Written in a config either as names (``[red, green, blue, nir]``: the n-th name is channel n; ``ndvi`` alone is
derived) or as mappings (``{name: nir, channel: 3}``, ``{name: gndvi, difference: [nir, green]}``).

A band may also come from a file of its own (one file per band): ``{name: nir, column: nir_path}`` takes it from
the file named in that manifest column, ``{name: nir, pattern: "{stem}_NIR.tif"}`` from the file of that name next
to the image (``{stem}``: the image's name without its extension; ``{name}``: with it; ``{suffix}``: the
extension). ``channel`` is then the channel within that file (0 by default).
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

RGB = ("red", "green", "blue")
# the shorthand names that mean a derived band when written alone
DERIVED = {"ndvi": ("nir", "red")}
MAX_BANDS = 64
PATTERN_FIELDS = ("stem", "name", "suffix")  # what a band file's pattern may name of its image file


class BandSpec(BaseModel):
    """One band: its name and either the file channel it is read from or the two bands it is derived from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=40, pattern=r"^[A-Za-z][A-Za-z0-9_-]*$",
                      description="The band's name (red, green, blue, nir, red_edge, thermal, ndvi, ...).")
    channel: int | None = Field(None, ge=0, le=1023, description="Its channel index in the image file.")
    difference: tuple[str, str] | None = Field(
        None, description="Derived: the normalised difference (a - b) / (a + b) of two bands read from the file.")
    column: str | None = Field(None, min_length=1, max_length=200,
                               description="One file per band: the manifest column that names this band's file.")
    pattern: str | None = Field(None, min_length=1, max_length=200,
                                description="One file per band: this band's file name next to the image, e.g. "
                                "'{stem}_NIR.tif' ({stem}, {name}, {suffix} of the image file).")

    @model_validator(mode="before")
    @classmethod
    def _file_channel(cls, value: Any) -> Any:
        """A band of its own file reads that file's channel 0 unless told otherwise."""
        if isinstance(value, dict) and (value.get("column") or value.get("pattern")) and "channel" not in value \
                and "difference" not in value:
            return {**value, "channel": 0}
        return value

    @model_validator(mode="after")
    def _one_source(self) -> BandSpec:
        if self.column is not None and self.pattern is not None:
            raise ValueError(f"band {self.name!r}: give column (a manifest column naming its file) or pattern (its "
                             f"file name next to the image), not both")
        if self.difference is not None and self.file_source is not None:
            raise ValueError(f"band {self.name!r}: a derived band (difference) is computed, not read from a file; "
                             f"drop its {self.file_source}")
        if (self.channel is None) == (self.difference is None):
            raise ValueError(f"band {self.name!r}: give exactly one of channel (read from the file) or difference "
                             f"(derived from two bands)")
        if self.pattern is not None:
            _check_pattern(self.name, self.pattern)
        return self

    @property
    def derived(self) -> bool:
        return self.difference is not None

    @property
    def file_source(self) -> str | None:
        """``column`` or ``pattern`` for a band read from a file of its own; None for one of the image file."""
        return "column" if self.column is not None else "pattern" if self.pattern is not None else None

    @property
    def in_image(self) -> bool:
        """Whether this band is read from the image file itself (not derived, not a file of its own)."""
        return self.channel is not None and self.file_source is None


def _check_pattern(band: str, pattern: str) -> None:
    """A band file's pattern names its image (``{stem}`` ...), is relative, and names only known fields."""
    where = f"band {band!r}: pattern {pattern!r}"
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(pattern) if f is not None]
    except ValueError as exc:
        raise ValueError(f"{where} is not a valid pattern ({exc}); expected e.g. '{{stem}}_NIR.tif'") from None
    unknown = [f for f in fields if f not in PATTERN_FIELDS]
    if unknown:
        raise ValueError(f"{where} names {', '.join('{' + f + '}' for f in unknown)}; expected only "
                         f"{', '.join('{' + f + '}' for f in PATTERN_FIELDS)} (of the image file)")
    if not fields:
        raise ValueError(f"{where} names no part of the image file, so every image would share one {band} file; "
                         f"expected e.g. '{{stem}}_{band.upper()}.tif'")
    if pattern.startswith(("/", "\\")) or (len(pattern) > 1 and pattern[1] == ":"):
        raise ValueError(f"{where} is an absolute path; expected a file name relative to the image's folder")


def parse_bands(value: Any) -> Any:
    """A ``data.bands`` list as written (names or mappings) -> mappings with explicit sources (before validation)."""
    if value is None or not isinstance(value, (list, tuple)):
        return value
    out: list[Any] = []
    read = 0
    for item in value:
        if isinstance(item, str) and item.lower() in DERIVED:
            out.append({"name": item, "difference": list(DERIVED[item.lower()])})
        elif isinstance(item, str):
            out.append({"name": item, "channel": read})
            read += 1
        else:
            out.append(item)
            if isinstance(item, dict) and "channel" in item and not (item.get("column") or item.get("pattern")):
                read += 1
    return out


def check_bands(bands: Sequence[BandSpec]) -> None:
    """Names distinct; a derived band names two bands read from the file; at least one band. Raises ValueError."""
    if not bands:
        raise ValueError("at least one band (e.g. [red, green, blue, nir]); leave data.bands unset for RGB")
    if len(bands) > MAX_BANDS:
        raise ValueError(f"{len(bands)} bands; at most {MAX_BANDS}")
    names = [b.name.lower() for b in bands]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"distinct band names; {', '.join(twice)} appear(s) more than once")
    read = [b.name.lower() for b in bands if not b.derived]
    if not read:
        raise ValueError("every band is derived; at least one must be read from the file (channel)")
    for band in bands:
        if band.difference is None:
            continue
        unknown = [n for n in band.difference if n.lower() not in read]
        if unknown:
            raise ValueError(f"derived band {band.name!r}: unknown band {', '.join(map(repr, unknown))} in "
                             f"difference {list(band.difference)}; expected names of bands read from the file: "
                             f"{', '.join(read)}")
        if band.difference[0].lower() == band.difference[1].lower():
            raise ValueError(f"derived band {band.name!r}: difference of {band.difference[0]!r} with itself is 0")


def band_names(bands: Sequence[BandSpec] | None) -> tuple[str, ...]:
    """The names the model sees, lower-case, in order (RGB when ``data.bands`` is unset)."""
    return RGB if bands is None else tuple(b.name.lower() for b in bands)


def band_columns(bands: Sequence[BandSpec] | None) -> tuple[tuple[str, str], ...]:
    """(band name, manifest column) of each band read from a file named in a manifest column."""
    return tuple((b.name.lower(), b.column) for b in bands or () if b.column is not None)


def band_option_conflicts(*, bands: Sequence[BandSpec] | None, mean: object, std: object) -> str | None:
    """Why the other options cannot go with ``data.bands``, or None."""
    if bands is None:
        return None
    if mean is not None or std is not None:
        return ("data.mean/data.std do not apply with data.bands: each band is normalised by statistics of the "
                "training split; leave them unset")
    return None
