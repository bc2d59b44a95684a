"""The rows the data checks look at: every sample of every split with its image measures."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from plantpheno.data.doctor.pixels import ImageStats
from plantpheno.data.sources import Sample


@dataclass(frozen=True)
class Entry:
    """One row of the dataset (a file listed twice is two entries), in the split it ended up in."""

    index: int
    path: Path
    target: str | float
    split: str
    group: str | None
    stats: ImageStats | None
    band_hash: str | None = None  # data.bands: the hash of the image's band values (band_stats.BandImageStats)

    @property
    def key(self) -> str:
        """The file, normalised (``a/./b.jpg`` and ``a/b.jpg`` are one file)."""
        return os.path.normpath(os.path.abspath(self.path))

    @property
    def content(self) -> str:
        """What identifies the picture: its decoded-pixel hash, else the hash of its band values, else (no
        measures) the file."""
        if self.stats is not None:
            return self.stats.pixel_hash
        return f"bands:{self.band_hash}" if self.band_hash else f"path:{self.key}"

    def note(self) -> str:
        target = f"{self.target:g}" if isinstance(self.target, float) else self.target
        return f"{self.split}, {target}" + (f", group {self.group}" if self.group else "")


def catalog(splits: Mapping[str, Sequence[Sample]], stats: Mapping[Path, ImageStats],
            band_hashes: Mapping[Path, str] | None = None) -> list[Entry]:
    """Every sample of every split, in split order, with the image measures of its file (if any) and, for band
    data, the hash of its band values."""
    entries: list[Entry] = []
    hashes = band_hashes or {}
    for split, samples in splits.items():
        for s in samples:
            entries.append(Entry(len(entries), s.path, s.target, split, s.group, stats.get(s.path),
                                 hashes.get(s.path)))
    return entries


def distinct_files(entries: Sequence[Entry]) -> list[Entry]:
    """The first entry of each file."""
    seen: dict[str, Entry] = {}
    for e in entries:
        seen.setdefault(e.key, e)
    return list(seen.values())


def same_target(a: str | float, b: str | float) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))
    return a == b
