"""The contact sheet of a suggestion round: one self-contained HTML page (images embedded as JPEG data URIs,
the run report's styles and content-security policy, nothing fetched) with the chosen images as the model sees
them, each with its rank, the reason, the prediction and its nearest labelled image; then the labelled images
to look at again, and the images left out with why."""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from plantpheno.version import __version__
from plantpheno.files.atomic import atomic_write_text
from plantpheno.data.transforms import model_square
from plantpheno.evaluation.html_report import CSP, CSS
from plantpheno.evaluation.report_gallery import load_square
from plantpheno.evaluation.report_sections import esc

if TYPE_CHECKING:
    from plantpheno.labelling.features import RunModel
    from plantpheno.labelling.suggest import Suggestions

THUMB = 128
MAX_SKIPPED_SHOWN = 200  # the full list is skipped.csv


def _img(path: Path, square) -> str:  # noqa: ANN001 - a model_square
    loaded = load_square(path, square)
    if isinstance(loaded, str):
        return f'<div class="missing">{esc(loaded)}</div>'
    img = Image.fromarray(np.asarray(loaded))
    img.thumbnail((THUMB, THUMB), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=82)
    uri = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img src="{uri}" alt="{esc(path.name)}" width="{img.width}" height="{img.height}">'


def write_sheet(path: Path, result: Suggestions, run_model: RunModel) -> None:
    """Write the contact sheet of ``result`` to ``path`` (atomically)."""
    meta = run_model.meta
    square = model_square(meta.image_size, list(meta.mean), meta.resize)
    tiles = []
    for s in result.suggestions:
        caption = (f"<b>#{s.rank}</b> score {s.score:.3f}<br>{esc(s.reason)}<br>predicted: {esc(s.predicted)}<br>"
                   f"nearest labelled: {esc(s.nearest.name)} (cosine {s.similarity:.2f})")
        tiles.append(f'<figure class="tile">{_img(s.path, square)}{_img(s.nearest, square)}<figcaption>{caption}'
                     f'<br><span class="file" title="{esc(s.path)}">{esc(s.path.name)}</span></figcaption></figure>')
    rechecks = [f'<figure class="tile label">{_img(r.path, square)}<figcaption>given: {esc(r.given)}<br>suggested: '
                f'{esc(r.suggested)}<br>the checker gives the given label {r.given_probability:.0%}<br>'
                f'<span class="file" title="{esc(r.path)}">{esc(r.path.name)}</span></figcaption></figure>'
                for r in result.recheck]
    skipped = "".join(f"<tr><td class=\"files\">{esc(p)}</td><td>{esc(why)}</td></tr>"
                      for p, why in result.skipped[:MAX_SKIPPED_SHOWN])
    more = (f"<p>and {len(result.skipped) - MAX_SKIPPED_SHOWN} more in skipped.csv.</p>"
            if len(result.skipped) > MAX_SKIPPED_SHOWN else "")
    run = run_model.run
    title = f"plantpheno suggestions: {run.experiment}/{run.name}"
    body = (f"<p>{len(result.suggestions)} of {result.pool_size} usable pool images, chosen by <b>"
            f"{esc(result.strategy)}</b> (left: the image as the model sees it; right: its nearest labelled image)."
            f"</p><div class=\"gallery\">{''.join(tiles)}</div>")
    if result.recheck:
        body += (f"<h2 id=\"recheck\">Labelled images to look at again ({len(result.recheck)})</h2><p>A logistic "
                 f"regression on the run's features that never saw them gives their label a low probability "
                 f"(the data doctor's label-error finder): a disagreement to look at, not a verdict.</p>"
                 f"<div class=\"gallery\">{''.join(rechecks)}</div>")
    if result.skipped:
        body += (f"<h2 id=\"skipped\">Left out of the pool ({len(result.skipped)})</h2><table><tr><th>file</th>"
                 f"<th>why</th></tr>{skipped}</table>{more}")
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f'<meta name="referrer" content="no-referrer"><meta name="viewport" content="width=device-width">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body><h1>{esc(title)}</h1>"
            f"<p class=\"muted\">{esc(run.path)} · written {time.strftime('%Y-%m-%d %H:%M')} by plantpheno "
            f"{__version__} · self-contained, works offline</p>{body}</body></html>\n")
    atomic_write_text(path, page)
