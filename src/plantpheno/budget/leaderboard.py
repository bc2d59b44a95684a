"""The leaderboard of a budget run: one row per candidate, the choice rule (stated before the first candidate
runs) and the choice, written as JSON and CSV into the chosen run's folder."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from plantpheno.files.atomic import atomic_write_text
from plantpheno.files.csvfile import write_csv
from plantpheno.records.evaluation import Evaluation

VERSION = 1
RULE = ("the best mean validation {metric} ({direction}); candidates within one standard error of the best are tied, "
        "and the tie goes to the cheaper one (the earlier rung of the ladder, which is ordered cheapest first)")


@dataclass
class Row:
    """One candidate's result: its validation score (mean and standard error over folds, or over the bootstrap of
    a single validation split) and its wall-clock seconds."""

    rung: int
    name: str
    reason: str
    settings: dict[str, Any]
    # pending, done, cut (stopped at its deadline at an epoch's end: scored on the best epoch it reached), dropped
    # (stopped at its deadline inside its backbone pass or an epoch: no figure), failed, skipped (did not fit the
    # budget), not tried
    status: str = "pending"
    score: float | None = None
    se: float | None = None
    folds: list[float] = field(default_factory=list)
    interval: list[float] | None = None  # a single split's bootstrap interval of the score
    seconds: float | None = None
    estimate_s: float | None = None
    runs: list[str] = field(default_factory=list)
    note: str = ""


def score_of(evaluation: Evaluation, metric: str) -> tuple[float, tuple[float, float] | None]:
    """A validation evaluation's ``metric`` and its bootstrap interval (when that is the interval's metric).

    A figure that was not finite reads as NaN, as the evaluation computed it (the record leaves it out of its
    values); a metric the evaluation does not have at all is a mistake of the caller."""
    if metric not in evaluation.counts_and_values():
        raise KeyError(f"evaluation has no metric {metric!r} (it has {', '.join(evaluation.values)})")
    value = evaluation.value(metric)
    interval = evaluation.interval
    if interval is not None and interval.metric == metric:
        return float("nan") if value is None else value, (float(interval.low), float(interval.high))
    return float("nan") if value is None else value, None


def summarise(row: Row, results: Sequence[tuple[float, tuple[float, float] | None]], *, z: float) -> None:
    """Mean and standard error: over the folds (K > 1), else from the split's bootstrap interval (half-width / z)."""
    values = [v for v, _ in results]
    row.folds = values
    row.score = statistics.fmean(values)
    if len(values) > 1:
        row.se = statistics.stdev(values) / math.sqrt(len(values))
    else:
        interval = results[0][1]
        row.interval = list(interval) if interval else None
        row.se = (interval[1] - interval[0]) / (2 * z) if interval else 0.0


def rule_text(metric: str, direction: str) -> str:
    """The choice rule in words, for ``metric`` (``max``: higher is better)."""
    return RULE.format(metric=metric, direction="higher is better" if direction == "max" else "lower is better")


def choose(rows: Sequence[Row], *, direction: str, status: str = "done") -> Row | None:
    """The rule of :data:`RULE`: best mean; within one standard error of it, the earliest rung (among the rows
    of ``status``: finished ones; cut ones only when none finished)."""
    done = [r for r in rows if r.status == status and r.score is not None]
    if not done:
        return None
    sign = 1.0 if direction == "max" else -1.0
    best = max(done, key=lambda r: sign * r.score)
    floor = sign * best.score - (best.se or 0.0)
    tied = [r for r in done if sign * r.score >= floor - 1e-12]
    return min(tied, key=lambda r: r.rung)


def write(path_json: Path, path_csv: Path, *, rows: Sequence[Row], chosen: Row | None, metric: str,
          direction: str, budget_s: float, elapsed_s: float, folds: int, extra: dict[str, Any]) -> None:
    """Both files, atomically."""
    doc = {"version": VERSION, "metric": metric, "direction": direction,
           "rule": rule_text(metric, direction),
           "budget_s": budget_s, "elapsed_s": round(elapsed_s, 1), "folds": folds,
           "chosen": chosen.name if chosen else None, **extra, "candidates": [asdict(r) for r in rows]}
    atomic_write_text(path_json, json.dumps(doc, indent=2, default=str) + "\n")
    header = ("rung", "candidate", "status", f"val_{metric}", "se", "folds", "seconds", "estimate_s", "chosen",
              "reason", "note")
    lines = [(r.rung, r.name, r.status, _round(r.score), _round(r.se), len(r.folds) or "",
              _round(r.seconds, 1), _round(r.estimate_s, 1), "yes" if chosen is r else "", r.reason, r.note)
             for r in rows]
    write_csv(path_csv, [header, *lines])


def read(path: Path) -> dict[str, Any]:
    """A leaderboard file (the report reads it through this)."""
    return json.loads(path.read_text(encoding="utf-8"))


def _round(value: float | None, digits: int = 4) -> Any:
    return "" if value is None else round(value, digits)
