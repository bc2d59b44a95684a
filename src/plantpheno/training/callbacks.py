"""Callbacks: best-metric tracking with early stopping, checkpoints, the metrics log, the console, trackers."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import plantpheno.distributed as distributed
from plantpheno.files.atomic import append_text, atomic_write_text
from plantpheno.run.epochlog import read_epoch_log, unreadable_path
from plantpheno.errors import TrainingError
from plantpheno.records.model_meta import ModelMeta
from plantpheno.reporting import Progress, Reporter
from plantpheno.run.folder import RunDir
from plantpheno.training.checkpoint import capture_rng, load_checkpoint, save_checkpoint
from plantpheno.training.loop import TrainingLoop

if TYPE_CHECKING:
    from plantpheno.tracking import Tracker


class EarlyStopping:
    """Tracks the best value of the monitored metric; stops after ``patience`` epochs without improvement, and
    says so through ``reporter`` (rank 0's; None on the other ranks).

    ``keep_last`` (``training.keep: last``): every finished epoch is the one kept (``best_epoch``, ``best.pt``), so
    the run ends with its final weights and the next phase starts from them; the config refuses a patience then."""

    def __init__(self, *, patience: int | None, min_delta: float, reporter: Reporter | None = None,
                 phase: str = "training", then: str = "", keep_last: bool = False) -> None:
        self.patience, self.min_delta, self.reporter = patience, min_delta, reporter
        self.phase, self.then = phase, then  # for the message: what ends, and what comes next (if anything)
        self.keep_last = keep_last

    def on_epoch_end(self, trainer: TrainingLoop, metrics: dict[str, float]) -> None:
        name, mode = trainer.monitor
        value, state = metrics[name], trainer.state
        best = state.best_value
        improved = self.keep_last or math.isfinite(value) and (
            best is None or (value > best + self.min_delta if mode == "max" else value < best - self.min_delta)
        )
        if improved:
            state.best_value, state.best_epoch, state.bad_epochs = value, state.epoch, 0
        else:
            state.bad_epochs += 1
        if self.patience is not None and state.bad_epochs >= self.patience:
            trainer.should_stop = True
            if self.reporter is not None:
                best = f"{state.best_value:.4g}" if state.best_value is not None else "none"
                self.reporter.info(
                    f"early stopping: {name} has not improved for {state.bad_epochs} epochs (patience "
                    f"{self.patience}, min_delta {self.min_delta:g}); {self.phase} ends after epoch {state.epoch} "
                    f"of {trainer.epochs}, keeping the best epoch, {state.best_epoch} ({name} {best}){self.then}")


class Checkpointer:
    """Writes ``best.pt`` when the monitored metric improves and ``last.pt`` after every epoch (and on
    interruption, mid-epoch); restores the best weights when training ends."""

    def __init__(self, run: RunDir, *, meta: ModelMeta) -> None:
        self.run, self.meta = run, meta.to_dict()  # checkpoints hold plain values (weights_only loading)

    def payload(self, trainer: TrainingLoop, *, full: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"model": trainer.nets.whole.state_dict(), "state": trainer.state.to_dict(),
                               "meta": self.meta}
        if full:
            opt = trainer.optimization
            out.update(optimizer=opt.optimizer.state_dict(), scaler=opt.scaler.state_dict(),
                       scheduler=opt.scheduler.state_dict() if opt.scheduler is not None else None,
                       rng=capture_rng())
        return out

    def on_epoch_end(self, trainer: TrainingLoop, metrics: dict[str, float]) -> None:
        if trainer.state.best_epoch == trainer.state.epoch:
            save_checkpoint(self.run.best_checkpoint, self.payload(trainer, full=False))
        save_checkpoint(self.run.last_checkpoint, self.payload(trainer, full=True))

    def on_interrupt(self, trainer: TrainingLoop) -> None:
        save_checkpoint(self.run.last_checkpoint, self.payload(trainer, full=True))

    def on_fit_end(self, trainer: TrainingLoop) -> None:
        if self.run.best_checkpoint.is_file():
            trainer.nets.whole.load_state_dict(load_checkpoint(self.run.best_checkpoint)["model"])


class MetricsLog:
    """Appends one JSON line per epoch to ``metrics.jsonl`` (with the training phase the epoch ran in).

    On (re)start, lines for epochs after the checkpoint's are dropped: a crash between writing the
    line and the checkpoint must not leave a duplicate epoch in the log. Lines that are not epoch records
    (torn by a crash, cut, edited) are moved to ``metrics.jsonl.unreadable`` and named (line numbers) in a
    warning; the records before and after them stay.
    """

    def __init__(self, path: Path, *, reporter: Reporter | None = None) -> None:
        self.path, self.reporter = path, reporter

    def on_fit_start(self, trainer: TrainingLoop) -> None:
        if not self.path.is_file():
            return
        log = read_epoch_log(self.path)
        if log.unreadable:  # kept aside first: a crash before the rewrite leaves them twice, never nowhere
            aside = unreadable_path(self.path)
            append_text(aside, "".join(line + "\n" for line in log.unreadable_text))
            if self.reporter is not None:
                self.reporter.warning(f"{log.describe_unreadable()}; moved to {aside.name}, the "
                                      f"{len(log.records)} readable epoch record(s) are kept")
        kept = [line for line, record in zip(log.record_text, log.records, strict=True)
                if record["epoch"] <= trainer.state.epoch]
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def on_epoch_end(self, trainer: TrainingLoop, metrics: dict[str, float]) -> None:
        record = {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in metrics.items()}
        record["best"] = trainer.state.best_epoch == trainer.state.epoch
        record["phase"] = trainer.state.phase  # what ran, for the report's phase marks (early stopping moves them)
        append_text(self.path, json.dumps(record) + "\n")


class Console:
    """A progress bar per epoch (loss, running metric, images/s) and one summary line per epoch, through the
    run's reporter."""

    def __init__(self, reporter: Reporter, *, progress_bar: bool) -> None:
        self.reporter, self.progress_bar = reporter, progress_bar
        self.bar: Progress | None = None

    def on_epoch_start(self, trainer: TrainingLoop) -> None:
        if not self.progress_bar:
            return
        total = len(trainer.loaders["train"]) + trainer.state.batch
        self.bar = self.reporter.progress(total=total, initial=trainer.state.batch, unit="batch",
                                          desc=f"epoch {trainer.state.epoch + 1}/{trainer.epochs}")

    def on_batch_end(self, trainer: TrainingLoop, loss: float, images: int) -> None:
        if self.bar is None:
            return
        acc = trainer.state.partial
        seen = max(acc["seen"], 1.0)
        self.bar.set_postfix(loss=f"{acc['loss'] / seen:.4f}",
                             **{trainer.task.train_metric: f"{acc['score'] / seen:.4f}"},
                             img_s=f"{acc['seen'] / max(acc['time'], 1e-9):.1f}", refresh=False)
        self.bar.update(1)

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_interrupt(self, trainer: TrainingLoop) -> None:
        self._close()

    def on_epoch_end(self, trainer: TrainingLoop, metrics: dict[str, float]) -> None:
        self._close()
        shown = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items()
                          if k not in ("epoch",) and isinstance(v, float))
        star = " *" if trainer.state.best_epoch == trainer.state.epoch else ""
        phase = " fine-tune" if trainer.state.phase == "fine_tune" else ""
        self.reporter.info(f"epoch {metrics['epoch']}/{trainer.epochs}{phase}  {shown}{star}")


class SystemSampler(Protocol):
    """Samples system metrics (CPU, memory, GPU) while training; ``step`` says which optimizer step it is."""

    def start(self, step: Callable[[], int]) -> None: ...

    def record(self) -> None:
        """Take one sample now (at each epoch's end: short runs get figures too)."""
        ...

    def stop(self) -> None: ...


class TrackerCallback:
    """Hands the trainer's values to a tracker: each epoch's metrics, and a step counter to the system sampler.

    It lives with the trainer so that trackers receive values and never see the trainer."""

    def __init__(self, tracker: Tracker, *, system: SystemSampler | None = None) -> None:
        self.tracker, self.system = tracker, system

    def on_fit_start(self, trainer: TrainingLoop) -> None:
        if self.system is not None:
            state = trainer.state
            self.system.start(lambda: state.global_step)

    def on_epoch_end(self, trainer: TrainingLoop, metrics: dict[str, float]) -> None:
        self.tracker.log_metrics({k: v for k, v in metrics.items() if k != "epoch"}, step=int(metrics["epoch"]))
        if self.system is not None:
            self.system.record()

    def close(self) -> None:
        if self.system is not None:
            self.system.stop()

    def on_interrupt(self, trainer: TrainingLoop) -> None:
        self.close()

    def on_fit_end(self, trainer: TrainingLoop) -> None:
        self.close()


class ReplicaCheck:
    """At the end of each phase, compare every rank's parameters (before rank 0 restores the best weights);
    ``identical`` holds the last answer."""

    def __init__(self, dist: distributed.DistContext) -> None:
        self.dist = dist
        self.identical: bool | None = None

    def on_fit_end(self, trainer: TrainingLoop) -> None:
        digests = self.dist.all_gather(distributed.parameters_digest(trainer.model))
        self.identical = len(set(digests)) == 1
        if not self.identical:
            raise TrainingError(f"model replicas diverged across ranks (parameter digests {digests}); "
                                f"this is a bug, please report it")
