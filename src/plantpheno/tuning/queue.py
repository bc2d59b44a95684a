"""The study's trial queue: exactly N trials, shared by any number of workers and machines.

The study's budget is held as WAITING trials (``study.enqueue_trial``): the fixed values of each grid
combination, or no values for random/TPE (the sampler picks them when a worker takes the trial).
Workers only take a trial when one is waiting (:func:`claim_next`, through ``study.ask``), so K workers
run exactly N trials between them. A trial whose worker died (:func:`fail_stale_trials`: same machine and
the process is gone, or no heartbeat for ``grace_period`` seconds) is told FAIL by whoever notices, with
the reason kept in the study's user attributes; an interrupted trial is told FAIL with
``user_attrs["retry"]`` by its own worker. Either is enqueued again with the same values (:func:`top_up`)
and does not count towards N. Should two launchers top the queue up at the same moment, or ``ask`` find
the last waiting trial taken by another machine (and make a new one), the trial numbered past the budget
(or not from the queue) is failed as ``surplus`` when taken, before it runs, and hidden from the reports.

Only Optuna's public API is used: ``enqueue_trial``, ``ask``, ``tell`` (by trial number for another
process's trial), trial and study user attributes.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import optuna
import psutil
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from plantpheno.tuning.plan import StudyPlan

WORKER_ATTR = "plantpheno:worker"
HEARTBEAT_ATTR = "plantpheno:heartbeat"
QUEUED_ATTR = "plantpheno:values"  # set on every trial the queue enqueues: the values it fixes ({} = sampled)
STALE_ATTR = "plantpheno:stale:"  # + trial number, a study user attribute: why a dead worker's trial failed
HOST = socket.gethostname()


def uses_a_trial(trial: FrozenTrial) -> bool:
    """Whether a trial uses up one of the study's N trials (retried, stale and surplus trials do not).

    A worker records ``error`` before it tells a trial FAIL; a FAIL trial without it was failed by another
    process because its worker was gone (:func:`fail_stale_trials`), and is retried."""
    if trial.state != TrialState.FAIL:
        return True
    attrs = trial.user_attrs
    return not (attrs.get("retry") or attrs.get("surplus") or "error" not in attrs)


def trial_values(trial: FrozenTrial) -> dict[str, Any]:
    """The values a trial runs (or ran) with: its enqueued fixed values, else its suggested ones."""
    return dict(trial.user_attrs.get(QUEUED_ATTR) or trial.params)


def trial_error(study: optuna.Study, trial: FrozenTrial) -> str | None:
    """Why a trial failed: its worker's message, or why its worker was found gone."""
    return trial.user_attrs.get("error") or study.user_attrs.get(f"{STALE_ATTR}{trial.number}")


def top_up(study: optuna.Study, plan: StudyPlan) -> int:
    """Enqueue the trials the study still lacks: retries of failed-stale trials first; return how many."""
    trials = study.get_trials(deepcopy=False)
    live = [t for t in trials if uses_a_trial(t)]
    retried = {t.user_attrs.get("retry_of") for t in trials}
    lost = [t for t in trials if not uses_a_trial(t) and not t.user_attrs.get("surplus") and t.number not in retried]
    if plan.grid is not None:
        have = {_key(trial_values(t)) for t in live}
        lost_by_key = {_key(trial_values(t)): t.number for t in lost}
        todo = [(p, lost_by_key.get(_key(p))) for p in plan.grid if _key(p) not in have]
    else:
        missing = max(plan.n_trials - len(live), 0)
        todo = [(trial_values(t), t.number) for t in lost[:missing]]
        todo += [({}, None)] * (missing - len(todo))
    for values, retry_of in todo:
        attrs: dict[str, Any] = {QUEUED_ATTR: values}
        if retry_of is not None:
            attrs["retry_of"] = retry_of
        study.enqueue_trial(values, user_attrs=attrs)
    return len(todo)


@contextlib.contextmanager
def queue_lock(plan: StudyPlan) -> Iterator[None]:
    """Hold this machine's lock on the study's queue (an exclusive ``flock`` on ``STUDY_DIR/.queue.lock``).

    Taking a waiting trial is a read-then-update in Optuna's storage. Journal files and server databases
    make it atomic, but sqlite does not: two processes could both read trial 0 as WAITING and both run
    it (seen here: the second one failed with "run directory trial-0000 already exists"). sqlite studies
    live on one machine, so a local lock around every change to the queue closes that race; on other
    storages it only serialises this machine's workers for a moment. A no-op where ``fcntl`` is missing.
    """
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    plan.study_dir.mkdir(parents=True, exist_ok=True)
    with open(plan.study_dir / ".queue.lock", "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def claim_next(study: optuna.Study, plan: StudyPlan) -> optuna.Trial | None:
    """Take the next waiting trial (``study.ask`` pops it atomically, across processes); None when the queue
    is empty."""
    while True:
        if not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            return None
        trial = study.ask()  # the sampler's before_trial runs here
        queued = QUEUED_ATTR in trial.user_attrs  # else another machine took the last one and ask made this
        before = sum(uses_a_trial(t) for t in study.get_trials(deepcopy=False) if t.number < trial.number)
        if queued and before < plan.n_trials:
            return trial
        trial.set_user_attr("surplus", True)
        study.tell(trial, state=TrialState.FAIL)


def fail_stale_trials(study: optuna.Study, *, grace_period: float) -> list[int]:
    """Mark RUNNING trials whose worker is gone as FAIL (``retry``), so :func:`top_up` runs them again."""
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        reason = _stale_reason(trial, grace_period=grace_period)
        if reason is None:
            continue
        try:
            study.tell(trial.number, state=TrialState.FAIL)
        except (UpdateFinishedTrialError, RuntimeError, ValueError):  # it ended meanwhile, or another process got
            continue                                                  # there first
        study.set_user_attr(f"{STALE_ATTR}{trial.number}", reason)
        failed.append(trial.number)
    return failed


def _stale_reason(trial: FrozenTrial, *, grace_period: float) -> str | None:
    worker = trial.user_attrs.get(WORKER_ATTR)
    if worker and worker["host"] == HOST:
        if _alive(worker["pid"], worker["started"]):
            return None
        return f"worker process {worker['pid']} on {HOST} ended while the trial was running"
    beat = trial.user_attrs.get(HEARTBEAT_ATTR)
    if beat is None and trial.datetime_start is not None:
        beat = trial.datetime_start.timestamp()
    if beat is not None and time.time() - beat > grace_period:
        who = f"worker {worker['pid']} on {worker['host']}" if worker else "its worker"
        return f"no heartbeat from {who} for {time.time() - beat:.0f} s (grace period {grace_period:g} s)"
    return None


def _alive(pid: int, started: float) -> bool:
    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and abs(process.create_time() - started) < 1.0
    except psutil.Error:
        return False


def _key(values: dict[str, Any]) -> str:
    return json.dumps(values, sort_keys=True, default=str)


class Lease:
    """Marks a running trial as this process's (host, pid, start time) and beats a heartbeat for it."""

    def __init__(self, trial: optuna.Trial, *, interval: float) -> None:
        self.trial, self.interval = trial, interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Lease:  # noqa: PYI034
        me = psutil.Process(os.getpid())
        self.trial.set_user_attr(WORKER_ATTR, {"host": HOST, "pid": me.pid, "started": me.create_time()})
        self._beat()
        self._thread = threading.Thread(target=self._run, name="plantpheno-trial-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        self.trial.set_user_attr(HEARTBEAT_ATTR, time.time())

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._beat()
            except Exception:  # noqa: BLE001, S112 - the trial ended meanwhile, or a storage hiccup: next beat
                continue

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
