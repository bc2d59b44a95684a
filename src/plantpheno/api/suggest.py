"""What to label next, from Python (``plantpheno data suggest``; see :mod:`plantpheno.api`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from plantpheno.reporting import ConsoleReporter, LoggingReporter, Reporter

if TYPE_CHECKING:
    from plantpheno.api.runs import Run
    from plantpheno.labelling.suggest import Suggestions


def suggest(run: Run | str | os.PathLike[str], *, pool: str | os.PathLike[str], budget: int,
            strategy: str | None = None, recheck: int = 0, out: str | os.PathLike[str] | None = None, seed: int = 0,
            device: str = "cpu", verbose: bool = True, reporter: Reporter | None = None) -> Suggestions:
    """Rank the images of ``pool`` (an image folder, or a CSV with a path column) for labelling with ``run``, and
    write ``suggestions.csv``, ``skipped.csv``, ``recheck.csv`` and the contact sheet ``suggestions.html`` to
    ``out`` (default ``RUN/suggestions/``), as ``plantpheno data suggest`` does.

    ``strategy``: ``margin``, ``entropy``, ``kcenter``, ``cluster-margin``, ``badge``, ``typiclust``, ``probcover``,
    ``typical-margin``, ``typical-badge``, ``disagreement`` (traits) or ``random``; by default ``margin`` for a round
    of at most one image a class, ``typical-badge`` for a larger one, ``badge`` for a trait. ``recheck``: also list
    that many labelled images most likely mislabelled. Returns the round (``.suggestions``, ``.skipped``,
    ``.recheck``, ``.files``).

    Raises:
        DataError: an empty pool, a pool of another band layout or image scale than the run's.
        ArgumentError: a budget larger than the pool, a strategy that does not fit the run's task.
    """
    from plantpheno.labelling.suggest import suggest as one_round

    path = run.path if hasattr(run, "path") else Path(run)
    shown = reporter if reporter is not None else ConsoleReporter() if verbose else LoggingReporter()
    return one_round(Path(path), Path(pool), budget=budget, strategy=strategy, recheck=recheck,
                     out=Path(out) if out is not None else None, seed=seed, device=device, reporter=shown)
