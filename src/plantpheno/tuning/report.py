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

from plantpheno.files.atomic import atomic_write_text, atomic_write_with
from plantpheno.config import config_to_yaml
from plantpheno.tuning.plan import StudyPlan
from plantpheno.records.evaluation import BaselineSummary
from plantpheno.tuning.queue import QUEUED_ATTR, STALE_ATTR

BEST_FILE, BEST_CONFIG, TRIALS_CSV = "best.json", "best_config.yaml", "trials.csv"
# Parameter importance (Optuna's fANOVA: a random forest fitted to the complete trials) ranks noise below this:
# with a handful of trials one or two points decide every split of the forest. 10 is also where Optuna's TPE
# sampler stops drawing at random and starts modelling the objective.
MIN_IMPORTANCE_TRIALS = 10
BASELINE_ATTR = "baseline"  # trial user attr (set by the worker): its model against the trivial baseline, on val


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
    baseline: dict[str, Any] | None = None  # the best trial against the trivial baseline, on validation

    @property
    def beats_baseline(self) -> bool | None:
        """Whether the best trial's model clearly beats the trivial baseline on validation (None: not known)."""
        summary = BaselineSummary.read(self.baseline)
        return summary.is_better if summary is not None and summary.known else None

    def summary(self) -> list[str]:
        """Lines for the console: counts, the best trial and values, and where the files are."""
        counts = ", ".join(f"{n} {state.lower()}" for state, n in self.counts.items() if n)
        lines = [f"study {self.study}: {sum(self.counts.values())} trials ({counts or 'none'})"]
        if self.best_trial is None:
            lines.append(f"no trial completed yet; nothing to report for {self.metric}")
        else:
            lines.append(f"best {self.metric}: {self.best_value:.6g} (trial {self.best_trial}, {self.best_run_dir})")
            lines += [f"  {k}: {v!r}" for k, v in self.best_params.items()]
            lines.append(baseline_line(self.baseline))
        lines += [f"note: {note}" for note in self.notes]
        lines += [f"{name}: {path}" for name, path in self.files.items()]
        return lines


def baseline_line(baseline: dict[str, Any] | None) -> str:
    """The best trial against the trivial baseline on validation, in one line; a loud one when it does not beat it."""
    summary = BaselineSummary.read(baseline)
    if summary is None or not summary.known:
        return "trivial baseline: not known (the best trial has no final evaluation on validation)"
    where = f"on the {summary.split or 'val'} split, against the {summary.kind} baseline"
    if summary.is_better:
        return f"the best trial {summary.text} ({where})"
    return (f"WARNING: the best trial {summary.text} ({where}): no trial clearly learned more than the class "
            f"frequencies or the mean; check the data and the space before training best_config.yaml")


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
    baseline = None if best is None else best.user_attrs.get(BASELINE_ATTR)
    if best is not None:
        values = {k: best.params[k] for k in plan.space.fields if k in best.params}
        files["best"], files["best_config"] = folder / BEST_FILE, folder / BEST_CONFIG
        atomic_write_text(files["best_config"], config_to_yaml(plan.best_config(values)))
        atomic_write_text(files["best"], json.dumps({
            "study": plan.name, "metric": plan.metric, "direction": plan.direction, "value": best.value,
            "trial": best.number, "params": values, "run_dir": best.user_attrs.get("run_dir"),
            "best_epoch": best.user_attrs.get("best_epoch"), "best_config": str(files["best_config"]),
            "trials": dict(Counter(t.state.name for t in trials)), "storage": plan.storage_url,
            "baseline": baseline,
        }, indent=2) + "\n")
    files.update(write_plots(study, folder, metric=plan.metric, notes=notes, fields=plan.space.fields))
    counts = {s.name: sum(t.state == s for t in trials) for s in
              (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING)}
    return TuneResult(
        study=plan.name, study_dir=folder, storage=plan.storage_url, metric=plan.metric, direction=plan.direction,
        best_value=None if best is None else best.value, best_trial=None if best is None else best.number,
        best_params={} if best is None else {k: best.params[k] for k in plan.space.fields if k in best.params},
        best_run_dir=None if best is None else best.user_attrs.get("run_dir"), counts=counts, files=files,
        notes=tuple(notes), baseline=baseline)


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


def write_plots(study: optuna.Study, folder: Path, *, metric: str, notes: list[str],
                fields: tuple[str, ...] = ()) -> dict[str, Path]:
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
        kwargs: dict[str, Any] = {"target_name": metric} if name in (
            "optimization_history", "parallel_coordinate", "param_importances") else {}
        if name == "param_importances":
            varied, reason = importance_params(complete, fields)
            if reason is not None:
                notes.append(f"{name}.png left out: {reason}")
                (folder / f"{name}.png").unlink(missing_ok=True)  # an earlier, smaller study's plot would mislead
                continue
            kwargs["params"] = varied
            fixed = [k for k in fields if k not in varied]
            if fixed:
                notes.append(f"{name}.png ranks only the parameters that varied; left out (one value in every "
                             f"complete trial): {', '.join(fixed)}")
        path = folder / f"{name}.png"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # optuna marks its matplotlib plots experimental
                axes = getattr(ovm, function)(study, **kwargs)
            figure = _figure(axes)
            atomic_write_with(path, lambda fh, f=figure: f.savefig(fh, format="png", dpi=110, bbox_inches="tight"))
            plt.close(figure)
            written[name] = path
        except Exception as exc:  # noqa: BLE001 - a plot must never lose the study's results
            notes.append(f"{name}.png skipped: {type(exc).__name__}: {exc}")
            plt.close("all")
    return written


def importance_params(complete: list[FrozenTrial], fields: tuple[str, ...]) -> tuple[list[str], str | None]:
    """The parameters an importance plot may rank (those that took 2 or more values in the complete trials), or
    why there is no plot: fewer than :data:`MIN_IMPORTANCE_TRIALS` complete trials, or fewer than 2 varied
    parameters (one alone is trivially 100 % important)."""
    if len(complete) < MIN_IMPORTANCE_TRIALS:
        return [], (f"parameter importances need at least {MIN_IMPORTANCE_TRIALS} complete trials to rank more than "
                    f"noise, the study has {len(complete)}")
    names = list(fields) or sorted({k for t in complete for k in t.params})
    varied = [k for k in names if len({repr(t.params.get(k)) for t in complete}) > 1]
    if len(varied) < 2:
        what = f"only {varied[0]} varied" if varied else "no parameter varied"
        return [], f"parameter importances need at least 2 parameters that varied in the complete trials; {what}"
    return varied, None


def _figure(axes: Any) -> Any:
    first = axes.flat[0] if hasattr(axes, "flat") else axes
    return first.figure
