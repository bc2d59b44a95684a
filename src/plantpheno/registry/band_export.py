"""What an exported model of ``data.bands`` takes, and the band images its parity check runs on.

The RGB export takes images in [0, 1] and contains the normalisation; a band export mirrors it: the graph takes
``(N, C, S, S)`` float32, the model's C bands **in the file's own units** (a 16-bit band as 0..65535, derived bands
such as NDVI computed as ``data.bands`` says), and contains the per-band scaling (clip each band to ``[low, high]``,
then ``(x - mean) / std``), the network and the output conversion. A deployment reads the bands, computes the
derived ones, clips each band to ``[low, high]`` and resizes as the package's ``resize`` says (pad: with each
band's training ``mean``); all of it is written into the exported file (:func:`band_preprocessing`).

Clipping before the resize makes the exported graph give what ``plantpheno predict`` gives: predict clips and
standardises, then resizes; standardising is affine and an antialiased bilinear resize averages with non-negative
weights that sum to one, so the two orders agree (and the graph's own clip is then a no-op).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from plantpheno.data.band_input import BandInput
from plantpheno.records.model_meta import ModelMeta

INPUT = ("the model's bands in the file's own units (derived bands computed), each clipped to [low, high], "
         "N x C x image_size x image_size float32 (antialiased bilinear resize; pad: with each band's mean)")


def band_scaling(meta: ModelMeta) -> dict[str, torch.Tensor]:
    """``low``, ``high``, ``mean``, ``std`` of a band model, each ``(1, C, 1, 1)`` float32 (the graph's buffers)."""
    assert meta.bands is not None and not isinstance(meta.bands, str)
    b = meta.bands
    return {key: torch.tensor(list(getattr(b, key)), dtype=torch.float32).view(1, -1, 1, 1)
            for key in ("low", "high", "mean", "std")}


def export_input(meta: ModelMeta, item: Any) -> torch.Tensor:
    """The exported graph's input ``(C, S, S)`` for one band image (a path, its bytes or an array, as ``predict``
    takes): its bands read, clipped and squared exactly as ``predict`` does, in the file's own units."""
    bands = BandInput.of(meta)
    assert bands is not None, "an RGB model's export takes RGB images in [0, 1]"
    scaling = band_scaling(meta)
    return bands(item, max_pixels=None) * scaling["std"][0] + scaling["mean"][0]


def sample_band_images(meta: ModelMeta, rows: Sequence[Mapping[str, str]]) -> list[torch.Tensor]:
    """The export inputs of those ``split.csv`` rows whose files are there (the package's stored samples of a band
    model); a band named in a manifest column is read from that row's column, as training read it."""
    bands = BandInput.of(meta)
    assert bands is not None
    by_column = [(b.name.lower(), b.column) for b in bands.bands if b.column is not None]
    items: list[Any] = []
    for row in rows:
        files = {"image": Path(row["path"]), **{name: Path(row.get(column) or "") for name, column in by_column}}
        if all(f.is_file() for f in files.values()):
            items.append(files if by_column else files["image"])
    return [export_input(meta, item) for item in items]


def band_preprocessing(meta: ModelMeta) -> dict[str, Any]:
    """The ``bands`` block and input description of an exported band model's preprocessing metadata."""
    assert meta.bands is not None and not isinstance(meta.bands, str)
    b = meta.bands
    return {"input": INPUT, "pad_fill": list(b.mean) if meta.resize == "pad" else None,
            "bands": {"names": list(b.names), "specs": list(b.specs), "low": list(b.low), "high": list(b.high),
                      "mean": list(b.mean), "std": list(b.std),
                      "scaling": "inside the graph: clip to [low, high], then (x - mean) / std, per band"}}
