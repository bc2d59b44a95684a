"""``tune()``: an Optuna study whose objective is ``pipeline.train`` on the config with the trial's values.

The study is created (or re-opened) in this process before any worker starts; its budget is put in
its queue (:mod:`plantpheno.tuning.queue`); then one worker runs here, or K worker processes
(``python -m plantpheno tune ... --worker``) share the queue; finally the reports are written.
Re-running the same command continues the study: finished trials are kept, trials of dead workers
are failed and run again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna

from plantpheno.files.atomic import atomic_write_text
from plantpheno.config import Config, config_to_dict, config_to_yaml, flatten_dict
from plantpheno.errors import TuningError
from plantpheno.reporting import Reporter, default_reporter
from plantpheno.tuning.plan import StudyPlan, make_plan
from plantpheno.tuning.queue import fail_stale_trials, queue_lock, top_up
from plantpheno.tuning.report import TuneResult, write_reports
from plantpheno.tuning.settings import TuneSettings, tuning_yaml
from plantpheno.tuning.space import SearchSpace
from plantpheno.tuning.storage import open_storage
from plantpheno.tuning.worker import PARENT_RUN_ATTR, run_worker

STUDY_ATTR = "plantpheno"  # what the study was created with: metric, sampler, space, base config
WORKER_CONFIG, WORKER_SPACE = "tune_config.yaml", "tune_space.yaml"


MAX_WORKERS = 256  # as --workers: worker processes on one machine


def tune(config: Config, space: SearchSpace, *, settings: TuneSettings, workers: int = 1,
         handle_signals: bool = True, echo: bool = True, reporter: Reporter | None = None) -> TuneResult:
    """Run (or continue) a hyperparameter study and write its reports into ``OUTPUT_DIR/<experiment>/<study>/``.

    Args:
        config: the base training config; each trial applies its values to it.
        space: the fields to vary (checked against ``config`` before anything runs).
        settings: sampler, pruner, metric, trials, storage, ... (see :class:`TuneSettings`).
        workers: worker processes on this machine sharing the study (1 = run trials in this process).
        handle_signals: let Ctrl-C/SIGTERM end the running trial cleanly (main thread only).
        echo: report warnings about the study (changed base config, workers that failed).
        reporter: where trial results and warnings go (default: Python's logging).

    Raises:
        ConfigError: invalid space or settings, before any trial runs.
        TuningError: the storage holds a study of the same name made with another space, metric or sampler.
        Interrupted: after Ctrl-C/SIGTERM, once the reports are written; re-run to continue.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
        raise TuningError(f"workers: got {workers!r}; expected an integer from 1 to {MAX_WORKERS} (processes on "
                          f"this machine)")
    reporter = default_reporter(reporter)
    plan = make_plan(config, space, settings)
    study = open_study(plan, reporter=reporter if echo else None)
    parent = StudyRun(plan, study)
    deadline = time.time() + plan.settings.timeout if plan.settings.timeout else None
    stopped: BaseException | None = None
    try:
        if workers == 1:
            run_worker(plan, deadline=deadline, parent_run_id=parent.run_id, handle_signals=handle_signals,
                       reporter=reporter)
        else:
            _run_worker_processes(plan, workers=workers, deadline=deadline, reporter=reporter if echo else None)
    except BaseException as exc:  # noqa: BLE001 - Interrupted, KeyboardInterrupt: report what is done, then stop
        stopped = exc
    result = write_reports(plan, study)
    parent.finish(result, status="completed" if stopped is None else "interrupted")
    if stopped is not None:
        raise stopped
    return result


def open_study(plan: StudyPlan, *, reporter: Reporter | None = None) -> optuna.Study:
    """Create the study (or load it, checking it was made the same way), fail stale trials, fill its queue."""
    plan.study_dir.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(study_name=plan.name, storage=open_storage(plan.storage_url),
                                direction=plan.direction, load_if_exists=True)
    _check_same_study(plan, study, reporter=reporter)
    with queue_lock(plan):
        fail_stale_trials(study, grace_period=plan.settings.grace_period)
        top_up(study, plan)
    atomic_write_text(plan.study_dir / WORKER_CONFIG, config_to_yaml(plan.config))
    atomic_write_text(plan.study_dir / WORKER_SPACE, tuning_yaml(plan.space, plan.settings))
    return study


def _check_same_study(plan: StudyPlan, study: optuna.Study, *, reporter: Reporter | None) -> None:
    base = flatten_dict(config_to_dict(plan.config))
    made = {"metric": plan.metric, "sampler": plan.settings.sampler, "space": plan.space.to_yaml()}
    stored = study.user_attrs.get(STUDY_ATTR)
    if stored is None:
        study.set_user_attr(STUDY_ATTR, {**made, "config": json.loads(json.dumps(base, default=str))})
        return
    for key, value in made.items():
        if json.dumps(stored.get(key), sort_keys=True) != json.dumps(value, sort_keys=True):
            raise TuningError(f"study {plan.name} in {plan.storage_url} was created with {key} {stored.get(key)!r}, "
                              f"this run has {value!r}: choose another --study name to start a new study")
    if study.direction.name.lower() != plan.direction:
        raise TuningError(f"study {plan.name} in {plan.storage_url} {study.direction.name.lower()}s; this run "
                          f"would {plan.direction} {plan.metric}: choose another --study name")
    changed = sorted(k for k in base if json.dumps(base[k], default=str) !=
                     json.dumps(stored.get("config", {}).get(k), default=str))
    if changed and reporter is not None:
        reporter.warning(f"study {plan.name} continues with a base config that differs from the one it started "
                         f"with in: {', '.join(changed)}")


def _run_worker_processes(plan: StudyPlan, *, workers: int, deadline: float | None,
                          reporter: Reporter | None) -> None:
    """Start ``workers`` processes of ``python -m plantpheno tune ... --worker`` and wait for them."""
    env = dict(os.environ)
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, threads)  # K workers share the cores instead of each taking all of them
    processes = [subprocess.Popen(worker_command(plan, worker_index=i, deadline=deadline), env=env)
                 for i in range(workers)]
    try:
        codes = [p.wait() for p in processes]
    except KeyboardInterrupt:  # the workers got the same Ctrl-C: let them stop their trials cleanly
        for p in processes:
            p.wait()
        raise
    failed = [(i, c) for i, c in enumerate(codes) if c != 0]
    if failed and reporter is not None:
        reporter.warning("worker(s) " + ", ".join(f"{i} (exit status {c})" for i, c in failed) +
                         " ended with an error; re-run the same command to continue the study")


def worker_command(plan: StudyPlan, *, worker_index: int, deadline: float | None) -> list[str]:
    """The command line of one worker process of this study (its files are in the study folder)."""
    command = [sys.executable, "-m", "plantpheno", "tune", str(plan.study_dir / WORKER_CONFIG),
               str(plan.study_dir / WORKER_SPACE), "--worker", "--worker-index", str(worker_index)]
    if deadline is not None:
        command += ["--timeout", f"{max(deadline - time.time(), 0.001):.3f}"]
    return command


class StudyRun:
    """The study's own MLflow run, parent of the trials' runs (only when mlflow is a configured backend)."""

    def __init__(self, plan: StudyPlan, study: optuna.Study) -> None:
        self.plan, self.trackers, self.run_id = plan, None, None
        if "mlflow" not in plan.config.tracking.backends:
            return
        from plantpheno.tracking.mlflow_backend import MlflowTracker
        from plantpheno.tracking.session import TrackerSet

        config = plan.config
        self.trackers = TrackerSet([MlflowTracker(config.tracking.mlflow, experiment=config.experiment,
                                                  output_dir=config.output_dir)])
        # workers of this machine started together would each make a study run: the first one makes it
        with queue_lock(plan):
            previous = study.user_attrs.get(PARENT_RUN_ATTR)
            ids = self.trackers.start(run_name=plan.name, resume_ids={"mlflow": previous} if previous else None)
            self.run_id = ids.get("mlflow")
            if self.run_id and not previous:
                study.set_user_attr(PARENT_RUN_ATTR, self.run_id)
            settings = {f"tuning.{k}": str(v) for k, v in plan.settings.model_dump().items() if v is not None}
            self.trackers.log_params({**settings, **{f"space.{k}": json.dumps(v) for k, v in
                                                     plan.space.to_yaml().items()}})
            self.trackers.set_tags({"plantpheno.study": plan.name, "plantpheno.study_dir": str(plan.study_dir)})

    def finish(self, result: TuneResult, *, status: str) -> None:
        if self.trackers is None:
            return
        step = sum(result.counts.values())
        metrics: dict[str, Any] = {f"trials/{k.lower()}": v for k, v in result.counts.items()}
        if result.best_value is not None:
            metrics[f"best/{result.metric}"] = result.best_value
            self.trackers.set_tags({"best_trial": str(result.best_trial),
                                    **{f"best.{k}": str(v) for k, v in result.best_params.items()}})
        self.trackers.log_metrics(metrics, step=step)
        for path in result.files.values():
            self.trackers.log_artifact(Path(path), folder="study")
        self.trackers.finish(status)  # type: ignore[arg-type]
