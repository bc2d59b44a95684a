"""Summaries of local run directories: ``find_runs``, ``read_run``, ``compare_runs`` and ``format_table``.

Everything here reads only the files a run leaves in ``OUTPUT_DIR/<experiment>/<run>/`` (``run.json``,
``config.yaml``, ``metrics.jsonl``, ``eval/<split>/metrics.json``, ``dataset.json``, ``environment.json``),
so it works without torch or any tracking library. Runs are often incomplete (interrupted, failed, or
crashed right after writing ``config.yaml``): every file is optional, and a file that is missing or
unreadable leaves the fields it would have filled as ``None`` instead of stopping the listing.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from plantpheno.config import flatten_dict
from plantpheno.run.epochlog import read_epoch_log
from plantpheno.errors import ConfigError, RunDirError
from plantpheno.run.folder import CONFIG_FILE, STATUS_FILE, RunDir
from plantpheno.records.evaluation import headline_of
from plantpheno.tasks import TASKS
from plantpheno.files.yamlfile import parse_yaml

log = logging.getLogger(__name__)

UNKNOWN_STATUS = "unknown"  # a run that crashed before writing run.json
# Shown in the header of a comparison, so never repeated as a differing parameter.
_NAMING_PARAMS = frozenset({"run_name", "experiment"})
_ALWAYS_COMPARED = ("seed", "model.backbone", "task")
_MISSING = object()


@dataclass(frozen=True)
class RunSummary:
    """What the files of one run directory say about it; ``None`` where a file or field is missing."""

    path: Path
    experiment: str
    name: str
    status: str
    task: str | None
    backbone: str | None
    epochs_done: int
    best_epoch: int | None
    monitor: str | None
    best_value: float | None
    test_metrics: dict[str, float]
    params: dict[str, object]
    updated: str | None
    eval_split: str | None = None
    headline_metric: str | None = None
    confidence_interval: tuple[float, float] | None = None
    dataset_fingerprint: str | None = None
    git_commit: str | None = None
    reason: str | None = None  # why an interrupted or failed run stopped

    @property
    def label(self) -> str:
        """``experiment/run``, as runs are named in tables."""
        return f"{self.experiment}/{self.name}"

    @property
    def epochs_planned(self) -> int | None:
        """``training.epochs`` of the run's config, plus its fine-tune phase's epochs."""
        head = _as_int(self.params.get("training.epochs"))
        return None if head is None else head + (_as_int(self.params.get("training.fine_tune.epochs")) or 0)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return jsonable(asdict(self))


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------


def is_run_dir(path: Path) -> bool:
    """A folder is a run when it holds ``config.yaml`` or ``run.json``."""
    return RunDir(path).is_run()


def find_runs(output_dir: Path, *, experiment: str | None = None) -> list[RunSummary]:
    """Every run under ``output_dir/<experiment>/<run>/``, sorted by experiment, then run name.

    Folders that are not runs (no ``config.yaml`` or ``run.json``) and hidden folders are skipped.
    """
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        what = "is not a directory" if output_dir.exists() else "does not exist"
        raise RunDirError(f"output directory {output_dir} {what}; pass the folder that holds "
                          f"<experiment>/<run>/ folders (the config's output_dir)")
    if experiment is not None:
        parents = [output_dir / experiment]
    else:
        parents = _subdirs(output_dir)
    runs = [read_run(run_dir) for parent in parents for run_dir in _subdirs(parent) if is_run_dir(run_dir)]
    return sorted(runs, key=lambda r: (r.experiment, r.name))


def experiments(output_dir: Path) -> list[str]:
    """Names of the experiment folders under ``output_dir`` that hold at least one run."""
    return [p.name for p in _subdirs(Path(output_dir)) if any(is_run_dir(r) for r in _subdirs(p))]


def read_run(run_dir: Path) -> RunSummary:
    """Summarize one run directory from whatever files it has."""
    run_dir = Path(run_dir)
    if not is_run_dir(run_dir):
        why = "no such folder" if not run_dir.exists() else f"no {CONFIG_FILE} or {STATUS_FILE}"
        raise RunDirError(f"{run_dir} is not a plantpheno run directory ({why})")
    run = RunDir(run_dir)
    raw_config = _read_yaml(run.config)
    params = flatten_dict(raw_config) if isinstance(raw_config, dict) else {}
    status = _as_dict(_read_json(run.status))
    history = _read_metrics_log(run.metrics_log)
    task = _as_str(params.get("task"))
    monitor = _as_str(status.get("monitor")) or _configured_monitor(params, task)
    best_epoch, best_value = _best(status, history, monitor)
    split = _as_str(params.get("evaluation.split")) or "test"
    metrics, headline, interval = _evaluation(run, split, status)
    return RunSummary(
        path=run_dir, experiment=run_dir.parent.name, name=run_dir.name,
        status=run.current_status() or UNKNOWN_STATUS, task=task,
        backbone=_as_str(params.get("model.backbone")), epochs_done=_epochs_done(status, history),
        best_epoch=best_epoch, monitor=monitor, best_value=best_value, test_metrics=metrics, params=params,
        updated=_as_str(status.get("updated")) or _mtime(run), eval_split=split if metrics else None,
        headline_metric=headline, confidence_interval=interval,
        dataset_fingerprint=_as_str(_as_dict(_read_json(run.dataset_info)).get("fingerprint")),
        git_commit=_as_str(_as_dict(_read_json(run.environment)).get("git_commit")),
        reason=_as_str(status.get("reason")),
    )


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """The run's per-epoch records (``metrics.jsonl``: lr, train and val metrics, epoch time, images/s, the
    training phase), in order; empty when no epoch has finished."""
    return _read_metrics_log(RunDir(Path(run_dir)).metrics_log)


def _subdirs(path: Path) -> list[Path]:
    """Visible sub-folders of ``path`` by name; none if it is not a readable folder."""
    try:
        return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


def _read_text(path: Path) -> str | None:
    """The file's text; ``None`` if it is missing or unreadable (warned about)."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("%s: cannot be read (%s); ignoring it", path, exc)
        return None


def _read_json(path: Path) -> Any:
    """Parsed JSON; ``None`` if the file is missing or not valid JSON (a crash mid-write)."""
    text = _read_text(path)
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        log.warning("%s: not valid JSON (%s); ignoring it", path, exc)
        return None


def _read_yaml(path: Path) -> Any:
    """Parsed YAML; ``None`` if the file is missing or not valid YAML."""
    text = _read_text(path)
    if text is None:
        return None
    try:
        return parse_yaml(text, what=str(path))
    except ConfigError as exc:
        log.warning("%s; ignoring it", str(exc).splitlines()[0])
        return None


def _read_metrics_log(path: Path) -> list[dict[str, Any]]:
    """The per-epoch records of ``metrics.jsonl``; lines that are not records (a torn last line, an edit) are
    skipped and named in a warning (file and line numbers)."""
    log_ = read_epoch_log(path)
    if log_.unreadable:
        log.warning("%s; skipping them", log_.describe_unreadable())
    return log_.records


def _configured_monitor(params: dict[str, object], task: str | None) -> str | None:
    """``training.monitor``, with ``auto`` resolved as ``Config.monitor`` does."""
    name = _as_str(params.get("training.monitor"))
    if name == "auto":
        spec = TASKS.get(task or "")
        return spec.default_monitor if spec is not None else None
    return name


def _best(status: dict[str, Any], history: list[dict[str, Any]],
          monitor: str | None) -> tuple[int | None, float | None]:
    """Best epoch and monitored value: from ``run.json`` once finished, else from the epoch log."""
    if _as_int(status.get("best_epoch")) is not None:
        return _as_int(status.get("best_epoch")), _as_float(status.get("best_value"))
    best_rows = [row for row in history if row.get("best") is True]
    if not best_rows:
        return None, None
    row = best_rows[-1]
    return _as_int(row.get("epoch")), _as_float(row.get(monitor)) if monitor else None


def _epochs_done(status: dict[str, Any], history: list[dict[str, Any]]) -> int:
    """Completed epochs: the epoch log is the most precise record; ``run.json`` the fallback."""
    if history:
        return max(_as_int(row["epoch"]) or 0 for row in history)
    for key in ("epochs", "epoch"):
        value = _as_int(status.get(key))
        if value is not None:
            return value
    return 0


def _evaluation(run: RunDir, split: str,
                status: dict[str, Any]) -> tuple[dict[str, float], str | None, tuple[float, float] | None]:
    """Scalar metrics, headline metric name and its confidence interval for ``split``.

    ``eval/<split>/metrics.json`` has every metric; ``run.json`` keeps the headline one as a fallback.
    """
    report = _as_dict(_read_json(run.eval(split).metrics))
    if not report:
        report = _as_dict(_as_dict(status.get("evaluation")).get(split))
    return headline_of(report)


def _mtime(run: RunDir) -> str | None:
    """When any of the run's summary files last changed (for runs without ``run.json``)."""
    stamps = []
    for path in (run.config, run.metrics_log, run.status):
        try:
            stamps.append(path.stat().st_mtime)
        except OSError:
            continue
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(max(stamps))) if stamps else None


def jsonable(value: Any) -> Any:
    """``value`` with paths as strings, tuples as lists and NaN/inf as ``None`` (strict JSON has neither)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value) if isinstance(value, Path) else value


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _as_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _as_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


# ----------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------

LIST_HEADERS = ("experiment", "run", "status", "task", "backbone", "epochs", "monitor", "best",
                "eval", "value", "CI")


def list_rows(runs: Sequence[RunSummary]) -> tuple[list[str], list[list[object]]]:
    """Headers and one row per run for ``plantpheno runs list``."""
    rows: list[list[object]] = []
    for run in runs:
        planned = run.epochs_planned
        epochs = f"{run.epochs_done}/{planned}" if planned is not None else run.epochs_done
        headline = run.headline_metric
        rows.append([
            run.experiment, run.name, run.status, run.task, run.backbone, epochs, run.monitor, run.best_value,
            f"{run.eval_split}/{headline}" if headline and run.eval_split else None,
            run.test_metrics.get(headline) if headline else None,
            list(run.confidence_interval) if run.confidence_interval else None,
        ])
    return list(LIST_HEADERS), rows


def compare_runs(runs: Sequence[RunSummary]) -> tuple[list[str], list[list[object]]]:
    """A side-by-side table, one column per run.

    Rows: the config parameters whose values differ between runs (a parameter missing from one
    run's config counts as different; runs without a config are left out of that test), then
    ``seed``, ``model.backbone`` and ``task``, the dataset fingerprint and git commit when they differ,
    then status, epochs, best epoch, monitor, best monitored value, and every evaluation metric
    present in any run (with the headline metric's confidence interval).
    """
    headers = ["field", *(run.label for run in runs)]
    table: dict[str, list[object]] = {}
    for key in _differing_params(runs):
        table[key] = [run.params.get(key) for run in runs]
    for key in _ALWAYS_COMPARED:
        table.setdefault(key, [run.params.get(key) for run in runs])
    for key, values in (("dataset.fingerprint", [_short(r.dataset_fingerprint) for r in runs]),
                        ("environment.git_commit", [_short(r.git_commit) for r in runs])):
        if len({v for v in values if v is not None}) > 1:
            table[key] = values
    table["status"] = [run.status for run in runs]
    table["epochs"] = [run.epochs_done for run in runs]
    table["best_epoch"] = [run.best_epoch for run in runs]
    table["monitor"] = [run.monitor for run in runs]
    table["best"] = [run.best_value for run in runs]
    table.update(_metric_rows(runs))
    return headers, [[key, *values] for key, values in table.items()]


def _differing_params(runs: Sequence[RunSummary]) -> list[str]:
    """Config keys (in config order) whose values are not the same in every run that has a config."""
    configured = [run.params for run in runs if run.params]
    keys = list(dict.fromkeys(key for params in configured for key in params))
    differing = []
    for key in keys:
        if key in _NAMING_PARAMS:
            continue
        values = [params.get(key, _MISSING) for params in configured]
        if any(value != values[0] for value in values[1:]):
            differing.append(key)
    return differing


def _metric_rows(runs: Sequence[RunSummary]) -> dict[str, list[object]]:
    """``split/metric`` rows, in order of first appearance; a ``... CI`` row after each headline metric."""
    rows: dict[str, list[object]] = {}
    for i, run in enumerate(runs):
        for metric, value in run.test_metrics.items():
            label = f"{run.eval_split}/{metric}"
            rows.setdefault(label, [None] * len(runs))[i] = value
            if metric == run.headline_metric and run.confidence_interval:
                rows.setdefault(f"{label} CI", [None] * len(runs))[i] = list(run.confidence_interval)
    return rows


def _short(value: str | None) -> str | None:
    return value[:12] if value else value


def format_cell(value: object) -> str:
    """One table cell: numbers with 4 significant digits, lists as ``[a, b]``, missing as ``-``."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(format_cell(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {format_cell(v)}" for k, v in value.items()) + "}"
    return str(value)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """An aligned plain-text table; columns holding only numbers (or missing values) are right-aligned."""
    cells = [[format_cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]
    numeric = [_is_numeric_column([row[i] for row in rows]) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        padded = (v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric))
        return "  ".join(padded).rstrip()

    rule = ["-" * w for w in widths]
    return "\n".join([line(list(headers)), line(rule), *(line(row) for row in cells)])


def _is_numeric_column(values: Sequence[object]) -> bool:
    present = [v for v in values if v is not None]
    return bool(present) and all(_as_float(v) is not None for v in present)
