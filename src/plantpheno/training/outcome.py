"""How a run that did not finish ended: ``run.json``'s status and the trackers' (an interruption, an early exit
such as a pruned trial, a failure), and what the run folder still holds after a failed write."""

from __future__ import annotations

from typing import Any

from plantpheno.errors import StorageError, TrainingError
from plantpheno.run.folder import RunDir
from plantpheno.tracking.session import TrackerSet
from plantpheno.training.loop import EarlyExit, Interrupted, NonFiniteLossError


def record_end(run: RunDir, trackers: TrackerSet, exc: BaseException, *, main: bool) -> bool:
    """How a run that did not finish ended, in ``run.json`` (written by rank 0) and in the trackers; returns
    whether ``run.json`` could be written."""
    if isinstance(exc, Interrupted):
        exc.run_dir = run.path
        status, tracked, fields = "interrupted", "interrupted", {"epoch": exc.state.epoch, "batch": exc.state.batch,
                                                                 "reason": exc.reason}
    elif isinstance(exc, EarlyExit):
        status, tracked, fields = exc.status, "interrupted", {"reason": str(exc)}
    elif isinstance(exc, KeyboardInterrupt):
        status, tracked, fields = "interrupted", "interrupted", {"reason": "KeyboardInterrupt"}
    else:
        status, tracked, fields = "failed", "failed", {"reason": str(exc) or type(exc).__name__}
    recorded = write_end_status(run, status, **fields) if main else False
    trackers.finish(tracked)
    return recorded


def write_end_status(run: RunDir, status: str, **fields: Any) -> bool:
    """``run.json`` at the end of a run, if it can still be written (a full disk must not hide the error that
    ended the run)."""
    try:
        run.write_status(status, **fields)
    except (OSError, StorageError, ValueError):
        return False
    return True


def what_is_safe(run: RunDir, recorded: bool) -> str:
    """After a failed write: what the run directory still holds, and how to go on."""
    marked = ("run.json marks the run failed" if recorded
              else "run.json could not be updated either (the run lists as crashed)")
    if run.last_checkpoint.is_file():
        kept = f"{run.last_checkpoint} holds the last completed epoch"
    elif run.best_checkpoint.is_file():
        kept = (f"{run.best_checkpoint} holds the best weights so far, but no resumable checkpoint was written "
                f"(a resume starts again from epoch 1)")
    else:
        kept = "no checkpoint was written yet (a resume starts again from epoch 1)"
    return (f"{marked}; {kept}. Free some space (or fix the permissions), then resume with: "
            f"plantpheno train --resume {run.path}")


def non_finite_error(exc: NonFiniteLossError, run: RunDir) -> TrainingError:
    """A loss that became NaN or infinite, as the error a person reads: where the last good weights are, and
    what to change."""
    kept = (f"the last good checkpoint is {run.last_checkpoint} (epoch {exc.epoch - 1})"
            if run.last_checkpoint.is_file() else "no epoch had completed")
    return TrainingError(f"{exc}; training stopped and {kept}. Lower training.learning_rate "
                         f"or set training.grad_clip_norm.")
