"""The study's trial queue: exactly N trials, shared by any number of workers and machines.

The study's budget is held as WAITING trials (``study.enqueue_trial``): the fixed values of each grid
combination, or no values for random/TPE (the sampler picks them when a worker takes the trial).
Workers only ever take a waiting trial (:func:`claim_next`), never create one, so K workers run
exactly N trials between them. A trial whose worker died (:func:`fail_stale_trials`: same machine and
the process is gone, or no heartbeat for ``grace_period`` seconds) or was interrupted is marked FAIL
with ``user_attrs["retry"]`` and enqueued again with the same values (:func:`top_up`); it does not
count towards N. Should two launchers top the queue up at the same moment, the trials numbered past
the budget are failed as ``surplus`` when taken, before they run, and hidden from the reports.
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
HOST = socket.gethostname()


def counts(trial: FrozenTrial) -> bool:
    """Whether a trial uses up one of the study's N trials (retried and surplus trials do not)."""
    return not (trial.state == TrialState.FAIL and (trial.user_attrs.get("retry") or trial.user_attrs.get("surplus")))


def trial_values(trial: FrozenTrial) -> dict[str, Any]:
    """The values a trial runs (or ran) with: its enqueued fixed values, else its suggested ones."""
    return dict(trial.system_attrs.get("fixed_params") or trial.params)


def top_up(study: optuna.Study, plan: StudyPlan) -> int:
    """Enqueue the trials the study still lacks: retries of failed-stale trials first; return how many."""
    trials = study.get_trials(deepcopy=False)
    live = [t for t in trials if counts(t)]
    retried = {t.user_attrs.get("retry_of") for t in trials}
    lost = [t for t in trials if not counts(t) and t.user_attrs.get("retry") and t.number not in retried]
    if plan.grid is not None:
        have = {_key(trial_values(t)) for t in live}
        lost_by_key = {_key(trial_values(t)): t.number for t in lost}
        todo = [(p, lost_by_key.get(_key(p))) for p in plan.grid if _key(p) not in have]
    else:
        missing = max(plan.n_trials - len(live), 0)
        todo = [(trial_values(t), t.number) for t in lost[:missing]]
        todo += [({}, None)] * (missing - len(todo))
    for values, retry_of in todo:
        study.enqueue_trial(values, user_attrs={"retry_of": retry_of} if retry_of is not None else None)
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
    """Take the next waiting trial (atomically, across processes); None when the queue is empty."""
    while True:
        # Study._pop_waiting_trial_id is what Study.ask uses; unlike ask, we never create a trial.
        trial_id = study._pop_waiting_trial_id()
        if trial_id is None:
            return None
        number = study._storage.get_trial(trial_id).number
        before = sum(counts(t) for t in study.get_trials(deepcopy=False) if t.number < number)
        if before < plan.n_trials:
            return optuna.Trial(study, trial_id)  # the sampler's before_trial runs here
        study._storage.set_trial_user_attr(trial_id, "surplus", True)
        study._storage.set_trial_state_values(trial_id, TrialState.FAIL)


def fail_stale_trials(study: optuna.Study, *, grace_period: float) -> list[int]:
    """Mark RUNNING trials whose worker is gone as FAIL (``retry``), so :func:`top_up` runs them again."""
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        reason = _stale_reason(trial, grace_period=grace_period)
        if reason is None:
            continue
        trial_id = trial._trial_id
        try:
            study._storage.set_trial_user_attr(trial_id, "error", reason)
            study._storage.set_trial_user_attr(trial_id, "retry", True)
            study._storage.set_trial_state_values(trial_id, TrialState.FAIL)
            failed.append(trial.number)
        except UpdateFinishedTrialError:  # another process got there first
            continue
    return failed


def _stale_reason(trial: FrozenTrial, *, grace_period: float) -> str | None:
    worker = trial.system_attrs.get(WORKER_ATTR)
    if worker and worker["host"] == HOST:
        if _alive(worker["pid"], worker["started"]):
            return None
        return f"worker process {worker['pid']} on {HOST} ended while the trial was running"
    beat = trial.system_attrs.get(HEARTBEAT_ATTR)
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

    def __init__(self, study: optuna.Study, trial_id: int, *, interval: float) -> None:
        self.storage, self.trial_id, self.interval = study._storage, trial_id, interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Lease:  # noqa: PYI034
        me = psutil.Process(os.getpid())
        self.storage.set_trial_system_attr(self.trial_id, WORKER_ATTR,
                                           {"host": HOST, "pid": me.pid, "started": me.create_time()})
        self._beat()
        self._thread = threading.Thread(target=self._run, name="plantpheno-trial-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        self.storage.set_trial_system_attr(self.trial_id, HEARTBEAT_ATTR, time.time())

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
