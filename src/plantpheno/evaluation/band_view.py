"""How the report shows an image of ``data.bands``: the model's input (the bands read, scaled and squared as in
training) and a colour composite a person can read, drawn from that same input.

The composite is RGB when the bands ``red``, ``green`` and ``blue`` are all present (whatever their position in
``data.bands``); otherwise a false-colour triple of the first three bands as R, G, B (with fewer than three, the
bands repeat: one band is shown grey). Each shown band is stretched linearly from its training low to its training
high (the robust 1st and 99th percentiles its standardisation clips to), so a 16-bit or float band fills the 0-255
range the way the model's scaling sees it, and every image of a run is stretched alike (comparable tiles).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from plantpheno.band_config import RGB
from plantpheno.data.band_input import BandInput
from plantpheno.records.model_meta import ModelMeta


def composite_choice(names: Sequence[str]) -> tuple[tuple[int, int, int], str]:
    """The bands shown as R, G, B (their indices in ``names``) and the sentence that says which they are."""
    lower = [n.lower() for n in names]
    stretch = "each stretched from its training 1st to 99th percentile"
    if all(n in lower for n in RGB):
        rgb = (lower.index("red"), lower.index("green"), lower.index("blue"))
        return rgb, f"an RGB composite of the red, green and blue bands ({stretch})"
    chosen = tuple(i % len(lower) for i in range(3))
    if len(lower) == 1:
        return (0, 0, 0), f"the {lower[0]} band in grey (the model's only band; {stretch})"
    shown = ", ".join(f"{c} = {lower[i]}" for c, i in zip("RGB", chosen))
    return chosen, (f"a false-colour composite of the first {min(3, len(lower))} bands, {shown} (no red, green and "
                    f"blue bands to show true colour; {stretch})")


@dataclass(frozen=True)
class BandView:
    """A band model's images for the report: :meth:`load` gives the model's input and its composite."""

    input: BandInput
    channels: tuple[int, int, int]
    low: np.ndarray  # the shown bands' training low and high, in standardised units
    high: np.ndarray
    description: str
    # bands named in manifest columns: each image's band files, from the run's split.csv (a path alone names none)
    band_files: dict[Path, dict[str, Path]] = field(default_factory=dict)

    @classmethod
    def of(cls, meta: ModelMeta, split_manifest: Path | None = None) -> BandView | None:
        """From a checkpoint's metadata (and the run's ``split.csv``, for bands named in manifest columns); None for
        an RGB model (the report draws those as before)."""
        reader = BandInput.of(meta)
        if reader is None:
            return None
        norm = reader.norm
        channels, description = composite_choice(norm.names)
        pick = list(channels)
        mean, std = np.asarray(norm.mean)[pick], np.asarray(norm.std)[pick]
        low = (np.asarray(norm.low)[pick] - mean) / std
        high = (np.asarray(norm.high)[pick] - mean) / std
        return cls(reader, channels, low.astype(np.float32), high.astype(np.float32), description,
                   _band_files(reader, split_manifest))

    def composite(self, standardised: torch.Tensor) -> np.ndarray:
        """A standardised ``(C, H, W)`` input -> the ``(H, W, 3)`` uint8 composite."""
        shown = standardised[list(self.channels)].detach().cpu().float().numpy().transpose(1, 2, 0)
        span = np.where(self.high > self.low, self.high - self.low, 1.0)
        return (np.clip((shown - self.low) / span, 0, 1) * 255 + 0.5).astype(np.uint8)

    def load(self, path: Path) -> tuple[np.ndarray, torch.Tensor] | str:
        """The composite and the model's input of the file at ``path``; or why it could not be read."""
        try:
            files = self.band_files.get(Path(path))
            tensor = self.input({"image": path, **files} if files else path)
        except Exception as exc:  # noqa: BLE001 - a moved or unreadable file is shown as such, not fatal
            return f"{type(exc).__name__}: {exc}"
        return self.composite(tensor), tensor

    def picture(self, path: Path) -> np.ndarray | str:
        """Only the composite (a thumbnail without a Grad-CAM map), or why it could not be read."""
        loaded = self.load(path)
        return loaded if isinstance(loaded, str) else loaded[0]


def _band_files(reader: BandInput, split_manifest: Path | None) -> dict[Path, dict[str, Path]]:
    """Each image's band files named in manifest columns (kept in ``split.csv``); empty without such bands."""
    columns = [(b.name.lower(), b.column) for b in reader.bands if b.column is not None]
    if not columns or split_manifest is None or not split_manifest.is_file():
        return {}
    from plantpheno.files.csvfile import read_csv

    with read_csv(split_manifest) as rows:
        return {Path(row["path"]): {name: Path(row[column]) for name, column in columns if row.get(column)}
                for row in rows}
