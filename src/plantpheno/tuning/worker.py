"""A tuning worker: takes waiting trials from the study until none is left, training one run per trial."""

from __future__ import annotations

import gc
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from plantpheno.errors import TrainingError, TuningError
from plantpheno.records.evaluation import BaselineSummary, Evaluation
from plantpheno.reporting import Reporter, default_reporter
from plantpheno.training.loop import EarlyExit, Interrupted
from plantpheno.tuning.plan import StudyPlan
from plantpheno.tuning.queue import Lease, claim_next, fail_stale_trials, queue_lock, top_up
from plantpheno.tuning.report import BASELINE_ATTR
from plantpheno.tuning.sampler import TrialSeededSampler
from plantpheno.tuning.storage import open_storage

PARENT_RUN_ATTR = "mlflow_parent_run_id"  # study user attr: the study's MLflow run, parent of the trials' runs


class TrialPruned(EarlyExit, optuna.TrialPruned):
    """Ends a trial's training run early: the run is recorded as ``pruned``, the trial as PRUNED."""

    status = "pruned"


class PruningReporter:
    """Trainer callback: reports the metric after every epoch, keeps its best value, prunes when told."""

    def __init__(self, trial: optuna.Trial, *, metric: str, direction: str) -> None:
        self.trial, self.metric, self.maximize = trial, metric, direction == "maximize"
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.epochs = 0

    def on_epoch_end(self, trainer: Any, metrics: dict[str, float]) -> None:
        epoch, value = int(metrics["epoch"]), metrics.get(self.metric)
        self.epochs = epoch
        if value is None or not math.isfinite(value):
            return
        if self.best is None or (value > self.best if self.maximize else value < self.best):
            self.best, self.best_epoch = float(value), epoch
        self.trial.report(float(value), epoch)
        # after the last epoch the run is complete: keep it (and its evaluation) rather than prune it
        if epoch < trainer.epochs and self.trial.should_prune():
            raise TrialPruned(f"pruned by the tuner after epoch {epoch} ({self.metric} {value:.4g})")


@dataclass
class WorkerSummary:
    """What one worker did: trial numbers by final state."""

    states: dict[str, list[int]] = field(default_factory=dict)

    def add(self, number: int, state: TrialState) -> None:
        self.states.setdefault(state.name, []).append(number)


def load_study(plan: StudyPlan, *, worker_index: int = 0) -> optuna.Study:
    """Open the plan's study (it must exist) with this worker's sampler and pruner."""
    storage = open_storage(plan.storage_url)
    try:
        storage.get_study_id_from_name(plan.name)
    except KeyError:
        raise TuningError(f"study {plan.name} does not exist in {plan.storage_url}; start it with "
                          f"`plantpheno tune` without --worker") from None
    return optuna.load_study(study_name=plan.name, storage=storage, sampler=_sampler(plan), pruner=_pruner(plan))


def _sampler(plan: StudyPlan) -> optuna.samplers.BaseSampler:
    """Trial N's draws come from (seed, N): distinct across workers and machines, the same however many share the
    study (grid trials are enqueued with all values fixed)."""
    if plan.settings.sampler == "tpe":
        def make(seed: int) -> optuna.samplers.BaseSampler:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.samplers.TPESampler(seed=seed, n_startup_trials=plan.settings.startup_trials,
                                                  constant_liar=True)
    else:
        def make(seed: int) -> optuna.samplers.BaseSampler:
            return optuna.samplers.RandomSampler(seed=seed)
    return TrialSeededSampler(make, seed=int(plan.settings.seed or 0))


def _pruner(plan: StudyPlan) -> optuna.pruners.BasePruner:
    s = plan.settings
    if s.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=s.startup_trials, n_warmup_steps=s.min_epochs)
    if s.pruner == "hyperband":
        max_epochs = "auto" if "training.epochs" in plan.space.fields else plan.config.training.epochs
        return optuna.pruners.HyperbandPruner(min_resource=s.min_epochs, max_resource=max_epochs)
    return optuna.pruners.NopPruner()


def run_worker(plan: StudyPlan, *, worker_index: int = 0, deadline: float | None = None,
               parent_run_id: str | None = None, handle_signals: bool = True,
               reporter: Reporter | None = None) -> WorkerSummary:
    """Run trials of the plan's study until its queue is empty or ``deadline`` (epoch seconds) passes.

    A trial that fails (invalid values, NaN loss, out of memory, ...) is recorded as FAIL with its
    error in ``user_attrs["error"]`` and the worker goes on. An interrupted trial (Ctrl-C, SIGTERM) is
    recorded as FAIL to be retried, and :class:`~plantpheno.training.loop.Interrupted` is re-raised.
    """
    reporter = default_reporter(reporter)
    study = load_study(plan, worker_index=worker_index)
    parent_run_id = parent_run_id or study.user_attrs.get(PARENT_RUN_ATTR)
    summary = WorkerSummary()
    while deadline is None or time.time() < deadline:
        with queue_lock(plan):
            fail_stale_trials(study, grace_period=plan.settings.grace_period)
            top_up(study, plan)
            trial = claim_next(study, plan)
        if trial is None:
            break
        state = run_trial(plan, study, trial, parent_run_id=parent_run_id, handle_signals=handle_signals,
                          reporter=reporter)
        summary.add(trial.number, state)
    return summary


def run_trial(plan: StudyPlan, study: optuna.Study, trial: optuna.Trial, *, parent_run_id: str | None,
              handle_signals: bool, reporter: Reporter | None = None) -> TrialState:
    """Train one trial's run and tell the study how it ended."""
    import plantpheno.pipeline as pipeline

    reporter = default_reporter(reporter)
    started = time.time()
    pruning = PruningReporter(trial, metric=plan.metric, direction=plan.direction)
    value: float | None = None
    with Lease(trial, interval=plan.settings.heartbeat_interval):
        try:
            values = plan.space.suggest(trial)
            config = plan.trial_config(values, number=trial.number, parent_run_id=parent_run_id)
            trial.set_user_attr("run_dir", str(config.output_dir / config.experiment / str(config.run_name)))
            result = pipeline.train(config, callbacks=[pruning], handle_signals=handle_signals, reporter=reporter)
            trial.set_user_attr(BASELINE_ATTR, baseline_record(result.metrics, metric=plan.metric))
            if pruning.best is None:
                raise TrainingError(f"{plan.metric} had no finite value in any epoch")
            state, value = TrialState.COMPLETE, pruning.best
        except TrialPruned as exc:
            state = TrialState.PRUNED
            trial.set_user_attr("pruned", str(exc))
        except (Interrupted, KeyboardInterrupt) as exc:
            _finish(study, trial, pruning, reporter, started, TrialState.FAIL, None,
                    error=f"interrupted ({getattr(exc, 'reason', 'KeyboardInterrupt')}); retried when the study "
                          f"is resumed", retry=True)
            raise
        except Exception as exc:  # noqa: BLE001 - any failing trial is recorded and the study goes on
            state = TrialState.FAIL
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:2000])
            _release_memory()
    _finish(study, trial, pruning, reporter, started, state, value)
    return state


def baseline_record(metrics: dict[str, Any], *, metric: str) -> dict[str, Any] | None:
    """The trivial baseline of a trial's final evaluation (on validation): its score on the study's metric, where
    the evaluation has one (accuracy, macro F1, MAE, ...; not the loss), and the paired verdict on the trial's model
    (:mod:`plantpheno.evaluation.baselines`)."""
    summary = BaselineSummary.of(Evaluation.from_dict(metrics), metric=metric.split("/", 1)[1])
    return summary.to_dict() if summary is not None else None


def _finish(study: optuna.Study, trial: optuna.Trial, pruning: PruningReporter, reporter: Reporter, started: float,
            state: TrialState, value: float | None, *, error: str | None = None, retry: bool = False) -> None:
    trial.set_user_attr("epochs", pruning.epochs)
    trial.set_user_attr("best_epoch", pruning.best_epoch)
    trial.set_user_attr("duration_s", round(time.time() - started, 3))
    if error is not None:
        trial.set_user_attr("error", error)
    if retry:
        trial.set_user_attr("retry", True)
    study.tell(trial, value, state=state)
    shown = f" {pruning.metric} {value:.4g}" if value is not None else ""
    why = trial.user_attrs.get("error") if state == TrialState.FAIL else None
    reporter.info(f"trial {trial.number}: {state.name}{shown} after {pruning.epochs} epoch(s), "
                  f"{time.time() - started:.1f} s {_params_text(trial.params)}" + (f": {why}" if why else ""))


def _params_text(params: dict[str, Any]) -> str:
    return "(" + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()) + ")"


def _release_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001, S110 - best effort after an out-of-memory failure
        pass
