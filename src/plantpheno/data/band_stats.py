"""Per-band measures of one image, taken in the image check's decode (no second read), for the data doctor's
band checks (:mod:`plantpheno.data.doctor.bands`) and the check of each file's sample type.

For every band: mean, standard deviation, the 1st and 99th percentiles, the share of pixels at zero and the share
saturated (at the largest value of its file's integer type: 255 for 8-bit, 65,535 for 16-bit; float and derived
bands have no fixed ceiling and count none), and the sample type of the file it came from. And a hash of the image's
band values (the exact-duplicate check of band data: the same bands in any file format or compression).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hashlib

import numpy as np

MEASURE_PIXELS = 65536  # pixels sampled per image for the percentiles (every pixel for the mean, std and shares)
MEASURES = ("mean", "std", "low", "high", "zero", "saturated")


@dataclass(frozen=True)
class BandImageStats:
    """One image's measures, one entry per band of ``data.bands`` (in order)."""

    names: tuple[str, ...]
    dtypes: tuple[str, ...]  # the sample type of the file each band comes from ("" for a derived band)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    low: tuple[float, ...]  # 1st percentile
    high: tuple[float, ...]  # 99th percentile
    zero: tuple[float, ...]  # share of pixels exactly 0
    saturated: tuple[float, ...]  # share of pixels at the integer type's maximum
    pixel_hash: str = ""  # SHA-256 (128 bits) of the float32 band values and their shape ("": not measured)

    def to_json(self) -> dict[str, Any]:
        return {k: list(getattr(self, k)) for k in ("names", "dtypes", *MEASURES)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BandImageStats:
        return cls(*(tuple(data[k]) for k in ("names", "dtypes", *MEASURES)))


def measure_bands(pixels: np.ndarray, names: Sequence[str], dtypes: Mapping[str, str]) -> BandImageStats:
    """The measures of a float32 ``(H, W, C)`` band array (:func:`~plantpheno.data.bands.read_bands`);
    ``dtypes``: the sample type of each band's file, by band name (derived bands absent)."""
    flat = pixels.reshape(-1, pixels.shape[-1]).astype(np.float64)
    take = flat if len(flat) <= MEASURE_PIXELS else flat[np.linspace(0, len(flat) - 1, MEASURE_PIXELS).astype(int)]
    low, high = np.percentile(take, (1.0, 99.0), axis=0)
    kinds = tuple(dtypes.get(n, "") for n in names)
    saturated = []
    for i, kind in enumerate(kinds):
        ceiling = np.iinfo(np.dtype(kind)).max if kind and np.dtype(kind).kind in "ui" else None
        saturated.append(float(np.mean(flat[:, i] >= ceiling)) if ceiling is not None else 0.0)
    as_tuple = lambda a: tuple(float(v) for v in a)  # noqa: E731
    digest = hashlib.sha256("x".join(map(str, pixels.shape)).encode() + b":")
    digest.update(np.ascontiguousarray(pixels, dtype=np.float32).tobytes())
    return BandImageStats(tuple(names), kinds, as_tuple(flat.mean(axis=0)), as_tuple(flat.std(axis=0)),
                          as_tuple(low), as_tuple(high), as_tuple((flat == 0).mean(axis=0)), tuple(saturated),
                          pixel_hash=digest.hexdigest()[:32])


def odd_sample_types(stats: Mapping[Path, BandImageStats]) -> dict[Path, str]:
    """The files whose band comes in another sample type than most files have for it (an 8-bit export among
    16-bit ones is read on a 256 times smaller scale): path -> the problem, for the image check to name. Only
    where one type is held by more than half of the images (otherwise there is no "expected" type to name)."""
    if not stats:
        return {}
    names = next(iter(stats.values())).names
    problems: dict[Path, list[str]] = {}
    for i, name in enumerate(names):
        counts = Counter(s.dtypes[i] for s in stats.values())
        common, count = counts.most_common(1)[0]
        if not common or count * 2 <= len(stats) or len(counts) == 1:
            continue
        for path, s in stats.items():
            if s.dtypes[i] != common:
                problems.setdefault(path, []).append(
                    f"band {name} is {s.dtypes[i]} where {count} of {len(stats)} images have {common}")
    return {p: "; ".join(why) + "; expected one sample type per band (re-export the file at the data set's bit "
                                "depth)" for p, why in problems.items()}
