"""What a study leaves in its folder: best.json, best_config.yaml, trials.csv and PNG plots."""

from __future__ import annotations

import csv
import io
import json
import math
import sys
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from plantpheno.atomic import atomic_write_text, atomic_write_with
from plantpheno.config import config_to_yaml
from plantpheno.tuning.plan import StudyPlan
from plantpheno.tuning.queue import QUEUED_ATTR, STALE_ATTR

BEST_FILE, BEST_CONFIG, TRIALS_CSV = "best.json", "best_config.yaml", "trials.csv"


@dataclass(frozen=True)
class TuneResult:
    """A study's outcome as written to its folder."""

    study: str
    study_dir: Path
    storage: str
    metric: str
    direction: str
    best_value: float | None
    best_params: dict[str, Any]
    best_trial: int | None
    best_run_dir: str | None
    counts: dict[str, int]  # visible trials by state: COMPLETE, PRUNED, FAIL, RUNNING, WAITING
    files: dict[str, Path] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def summary(self) -> list[str]:
        """Lines for the console: counts, the best trial and values, and where the files are."""
        counts = ", ".join(f"{n} {state.lower()}" for state, n in self.counts.items() if n)
        lines = [f"study {self.study}: {sum(self.counts.values())} trials ({counts or 'none'})"]
        if self.best_trial is None:
            lines.append(f"no trial completed yet; nothing to report for {self.metric}")
        else:
            lines.append(f"best {self.metric}: {self.best_value:.6g} (trial {self.best_trial}, {self.best_run_dir})")
            lines += [f"  {k}: {v!r}" for k, v in self.best_params.items()]
        lines += [f"note: {note}" for note in self.notes]
        lines += [f"{name}: {path}" for name, path in self.files.items()]
        return lines


def visible_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The study's trials without surplus ones (taken past the budget and never run)."""
    return [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("surplus")]


def write_reports(plan: StudyPlan, study: optuna.Study) -> TuneResult:
    """Write the study's report files into its folder and return what they say."""
    folder = plan.study_dir
    folder.mkdir(parents=True, exist_ok=True)
    trials = visible_trials(study)
    files = {"trials": folder / TRIALS_CSV}
    stale = {int(k[len(STALE_ATTR):]): v for k, v in study.user_attrs.items() if k.startswith(STALE_ATTR)}
    atomic_write_text(files["trials"], trials_csv(plan, trials, stale=stale))
    best = _best_trial(trials, maximize=plan.direction == "maximize")
    notes: list[str] = []
    if best is not None:
        values = {k: best.params[k] for k in plan.space.fields if k in best.params}
        files["best"], files["best_config"] = folder / BEST_FILE, folder / BEST_CONFIG
        atomic_write_text(files["best_config"], config_to_yaml(plan.best_config(values)))
        atomic_write_text(files["best"], json.dumps({
            "study": plan.name, "metric": plan.metric, "direction": plan.direction, "value": best.value,
            "trial": best.number, "params": values, "run_dir": best.user_attrs.get("run_dir"),
            "best_epoch": best.user_attrs.get("best_epoch"), "best_config": str(files["best_config"]),
            "trials": dict(Counter(t.state.name for t in trials)), "storage": plan.storage_url,
        }, indent=2) + "\n")
    files.update(write_plots(study, folder, metric=plan.metric, notes=notes))
    counts = {s.name: sum(t.state == s for t in trials) for s in
              (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING)}
    return TuneResult(
        study=plan.name, study_dir=folder, storage=plan.storage_url, metric=plan.metric, direction=plan.direction,
        best_value=None if best is None else best.value, best_trial=None if best is None else best.number,
        best_params={} if best is None else {k: best.params[k] for k in plan.space.fields if k in best.params},
        best_run_dir=None if best is None else best.user_attrs.get("run_dir"), counts=counts, files=files,
        notes=tuple(notes))


def _best_trial(trials: list[FrozenTrial], *, maximize: bool) -> FrozenTrial | None:
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value)]
    if not done:
        return None
    sign = 1.0 if maximize else -1.0
    return max(done, key=lambda t: (sign * t.value, -t.number))  # ties go to the earlier trial


def trials_csv(plan: StudyPlan, trials: list[FrozenTrial], *, stale: dict[int, str] | None = None) -> str:
    """number, state, value, one column per space field, duration_s, epochs, best_epoch, run_dir, error."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["number", "state", "value", *plan.space.fields, "duration_s", "epochs", "best_epoch",
                     "run_dir", "error"])
    for t in trials:
        duration = t.user_attrs.get("duration_s")
        if duration is None and t.duration is not None:
            duration = round(t.duration.total_seconds(), 3)
        params = t.params or t.user_attrs.get(QUEUED_ATTR) or {}
        error = t.user_attrs.get("error") or (stale or {}).get(t.number, "")
        retried_as = [u.number for u in trials if u.user_attrs.get("retry_of") == t.number]
        if retried_as:
            error = f"{error}; retried as trial {retried_as[0]}"
        writer.writerow([t.number, t.state.name, "" if t.value is None else t.value,
                         *(params.get(f, "") for f in plan.space.fields), "" if duration is None else duration,
                         t.user_attrs.get("epochs", ""), t.user_attrs.get("best_epoch") or "",
                         t.user_attrs.get("run_dir", ""), error])
    return out.getvalue()


_PLOTS = {
    "optimization_history": "plot_optimization_history",
    "intermediate_values": "plot_intermediate_values",
    "parallel_coordinate": "plot_parallel_coordinate",
    "param_importances": "plot_param_importances",
}


def write_plots(study: optuna.Study, folder: Path, *, metric: str, notes: list[str]) -> dict[str, Path]:
    """Optuna's matplotlib plots as PNG files; a plot that cannot be drawn yet is skipped with a note."""
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")  # files only; a backend the caller already chose is left alone
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    written: dict[str, Path] = {}
    for name, function in _PLOTS.items():
        if not complete:
            notes.append(f"{name}.png skipped: no complete trial yet")
            continue
        if name == "param_importances" and len(complete) < 2:
            notes.append(f"{name}.png skipped: parameter importances need at least 2 complete trials")
            continue
        path = folder / f"{name}.png"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # optuna marks its matplotlib plots experimental
                kwargs = {"target_name": metric} if name in ("optimization_history", "parallel_coordinate",
                                                             "param_importances") else {}
                axes = getattr(ovm, function)(study, **kwargs)
            figure = _figure(axes)
            atomic_write_with(path, lambda fh, f=figure: f.savefig(fh, format="png", dpi=110, bbox_inches="tight"))
            plt.close(figure)
            written[name] = path
        except Exception as exc:  # noqa: BLE001 - a plot must never lose the study's results
            notes.append(f"{name}.png skipped: {type(exc).__name__}: {exc}")
            plt.close("all")
    return written


def _figure(axes: Any) -> Any:
    first = axes.flat[0] if hasattr(axes, "flat") else axes
    return first.figure
