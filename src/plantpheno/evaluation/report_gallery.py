"""The report's galleries: the worst errors and a few correct examples per class, each image beside its
Grad-CAM overlay, chosen from ``predictions.csv`` and drawn as inline JPEG thumbnails."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from plantpheno.evaluation.gradcam import grad_cam, overlay

if TYPE_CHECKING:
    from plantpheno.evaluation.band_view import BandView

THUMB = 128  # pixels shown per image
CORRECT_PER_CLASS = 2
_CHUNK = 16


@dataclass(frozen=True)
class Example:
    path: Path
    caption: tuple[str, ...]
    target: int | None  # class whose evidence the map shows (None: the trait output)
    bad: bool  # an error (red caption)


@dataclass(frozen=True)
class Tile:
    example: Example
    image: str | None  # data URIs; None when the file could not be read
    cam: str | None
    problem: str | None = None


def classification_examples(rows: Sequence[dict[str, str]], class_names: Sequence[str], *,
                            worst: int) -> tuple[list[Example], list[Example]]:
    """The ``worst`` errors by loss (-log p(true class)), and up to two correct images per class (the most
    confident ones). An error's map shows the evidence for the predicted class, a correct one's for its class."""
    index = {name: i for i, name in enumerate(class_names)}

    def p(row: dict[str, str], name: str) -> float:
        return float(row[f"p_{name}"])

    errors = sorted((r for r in rows if r["label"] != r["predicted"]), key=lambda r: p(r, r["label"]))[:worst]
    bad = [Example(Path(r["path"]), (f"true: {r['label']}", f"predicted: {r['predicted']} ({float(r['confidence']):.0%})",
                                     f"p(true) = {p(r, r['label']):.1%}, loss {-math.log(max(p(r, r['label']), 1e-12)):.2f}"),
                   index[r["predicted"]], True) for r in errors]
    good: list[Example] = []
    for name in class_names:
        right = sorted((r for r in rows if r["label"] == name == r["predicted"]), key=lambda r: -float(r["confidence"]))
        good += [Example(Path(r["path"]), (name, f"confidence {float(r['confidence']):.0%}"), index[name], False)
                 for r in right[:CORRECT_PER_CLASS]]
    return bad, good


def regression_examples(rows: Sequence[dict[str, str]], *, worst: int) -> tuple[list[Example], list[Example]]:
    """The ``worst`` absolute errors, and the ``worst // 2`` closest predictions."""
    ranked = sorted(rows, key=lambda r: -abs(float(r["error"])))

    def example(r: dict[str, str], bad: bool) -> Example:
        return Example(Path(r["path"]), (f"true: {float(r['value']):g}", f"predicted: {float(r['predicted']):.2f}",
                                         f"error {float(r['error']):+.2f}"), None, bad)

    return [example(r, True) for r in ranked[:worst]], [example(r, False) for r in ranked[::-1][:max(1, worst // 2)]]


def render(examples: Sequence[Example], model: nn.Module, *, image_size: int, mean: Sequence[float],
           std: Sequence[float], device: torch.device, resize: str = "crop",
           view: BandView | None = None) -> list[Tile]:
    """Each example as a thumbnail and its Grad-CAM overlay (computed in chunks), both of the square the model
    saw (``resize``: the run's ``data.resize``); ``view``: a model of ``data.bands``, drawn as its composite."""
    from plantpheno.data.transforms import model_square

    if view is not None:
        return _render_bands(examples, model, view, device)

    square = model_square(image_size, mean, resize)
    tiles: list[Tile] = []
    for start in range(0, len(examples), _CHUNK):
        chunk = examples[start:start + _CHUNK]
        loaded = [load_square(e.path, square) for e in chunk]
        ok = [i for i, item in enumerate(loaded) if isinstance(item, np.ndarray)]
        cams: dict[int, np.ndarray] = {}
        if ok:
            pixels = torch.from_numpy(np.stack([loaded[i] for i in ok])).permute(0, 3, 1, 2).float() / 255.0
            m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
            s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
            targets = [chunk[i].target for i in ok]
            classes = torch.tensor(targets) if all(t is not None for t in targets) else None
            maps = grad_cam(model, ((pixels - m) / s).to(device), classes)
            cams = dict(zip(ok, maps))
        tiles += _tiles(chunk, loaded, cams, lambda item: item)
    return tiles


def _tiles(chunk: Sequence[Example], loaded: Sequence[Any], cams: dict[int, np.ndarray],
           picture: Callable[[Any], np.ndarray]) -> list[Tile]:
    """One tile per example: its ``picture`` (uint8 RGB) and Grad-CAM overlay, or why it could not be loaded."""
    return [Tile(example, None, None, item) if isinstance(item, str)
            else Tile(example, _jpeg(picture(item)), _jpeg(overlay(picture(item), cams[i])))
            for i, (example, item) in enumerate(zip(chunk, loaded))]


def _render_bands(examples: Sequence[Example], model: nn.Module, view: BandView, device: torch.device) -> list[Tile]:
    """:func:`render` for a band model: Grad-CAM on the bands the model reads, drawn over their composite."""
    tiles: list[Tile] = []
    for start in range(0, len(examples), _CHUNK):
        chunk = examples[start:start + _CHUNK]
        loaded = [view.load(e.path) for e in chunk]
        ok = [i for i, item in enumerate(loaded) if not isinstance(item, str)]
        cams: dict[int, np.ndarray] = {}
        if ok:
            targets = [chunk[i].target for i in ok]
            classes = torch.tensor(targets) if all(t is not None for t in targets) else None
            maps = grad_cam(model, torch.stack([loaded[i][1] for i in ok]).to(device), classes)
            cams = dict(zip(ok, maps))
        tiles += _tiles(chunk, loaded, cams, lambda item: item[0])
    return tiles


def load_square(path: Path, square: Callable[[Image.Image], Image.Image]) -> np.ndarray | str:
    """The image as the model saw it (``square``: :func:`~plantpheno.data.transforms.model_square`), uint8 RGB;
    or why it failed."""
    from plantpheno.data.images import load_rgb

    try:
        img = square(load_rgb(path))
    except Exception as exc:  # noqa: BLE001 - a moved or unreadable file is shown as such, not fatal
        return f"{type(exc).__name__}: {exc}"
    return np.asarray(img, dtype=np.uint8)


def _jpeg(pixels: np.ndarray) -> str:
    img = Image.fromarray(pixels)
    if img.width > THUMB:
        img = img.resize((THUMB, THUMB), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=82)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def tiles_html(tiles: Sequence[Tile], escape: Any) -> str:
    """A grid of figures: image, overlay, caption (errors in red)."""
    parts = ['<div class="gallery">']
    for t in tiles:
        cls = "tile bad" if t.example.bad else "tile"
        name = escape(t.example.path.name)
        if t.image is None:
            body = f'<div class="missing">{escape(t.problem or "not readable")}</div>'
        else:
            body = (f'<img src="{t.image}" alt="{name}" width="{THUMB}" height="{THUMB}">'
                    f'<img src="{t.cam}" alt="Grad-CAM of {name}" width="{THUMB}" height="{THUMB}">')
        caption = "<br>".join(escape(line) for line in t.example.caption)
        parts.append(f'<figure class="{cls}">{body}<figcaption>{caption}<br><span class="file" title="'
                     f'{escape(str(t.example.path))}">{name}</span></figcaption></figure>')
    parts.append("</div>")
    return "".join(parts)


def label_error_html(finding: dict[str, Any], square: Callable[[Image.Image], Image.Image], escape: Any, *,
                     limit: int = 24, load: Callable[[Path], np.ndarray | str] | None = None) -> str:
    """The suspected label errors of a ``label_errors`` finding (``data_check.json``) as a grid of thumbnails as
    the model saw them, each with its given and suggested label and how little the checker believes the given
    one: a disagreement to look at, not a verdict. ``load``: how to draw a file instead (a band model's
    composite)."""
    details = finding.get("details") or {}
    files = [group[0] for group in finding.get("files") or [] if group]
    given, suggested = details.get("given") or [], details.get("suggested") or []
    p_given, p_suggested = details.get("given_probability") or [], details.get("suggested_probability") or []
    parts = ['<div class="gallery">']
    for i, path in enumerate(files[:limit]):
        loaded = load(Path(path)) if load is not None else load_square(Path(path), square)
        name = escape(Path(path).name)
        body = (f'<div class="missing">{escape(loaded)}</div>' if isinstance(loaded, str)
                else f'<img src="{_jpeg(loaded)}" alt="{name}" width="{THUMB}" height="{THUMB}">')
        lines = [f"given: {given[i]}" if i < len(given) else "", f"suggested: {suggested[i]}" if i < len(suggested)
                 else ""]
        if i < len(p_given):
            lines.append(f"the checker gives the given label {p_given[i]:.0%}"
                         + (f", {suggested[i]} {p_suggested[i]:.0%}" if i < len(p_suggested) and i < len(suggested)
                            else ""))
        caption = "<br>".join(escape(line) for line in lines if line)
        parts.append(f'<figure class="tile label">{body}<figcaption>{caption}<br><span class="file" title="'
                     f'{escape(path)}">{name}</span></figcaption></figure>')
    parts.append("</div>")
    more = f"<p>and {len(files) - limit} more in data_check.json.</p>" if len(files) > limit else ""
    return "".join(parts) + more
