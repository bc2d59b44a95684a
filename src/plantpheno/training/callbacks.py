"""Callbacks: best-metric tracking with early stopping, checkpoints, the metrics log, the console."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from plantpheno.atomic import atomic_write_text
from plantpheno.training.checkpoint import capture_rng, load_checkpoint, save_checkpoint
from plantpheno.training.trainer import Trainer

BEST, LAST = "best.pt", "last.pt"


class EarlyStopping:
    """Tracks the best value of the monitored metric; stops after ``patience`` epochs without improvement."""

    def __init__(self, *, patience: int | None, min_delta: float) -> None:
        self.patience, self.min_delta = patience, min_delta

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        name, mode = trainer.monitor
        value, state = metrics[name], trainer.state
        best = state.best_value
        improved = math.isfinite(value) and (
            best is None or (value > best + self.min_delta if mode == "max" else value < best - self.min_delta)
        )
        if improved:
            state.best_value, state.best_epoch, state.bad_epochs = value, state.epoch, 0
        else:
            state.bad_epochs += 1
        if self.patience is not None and state.bad_epochs >= self.patience:
            trainer.should_stop = True


class Checkpointer:
    """Writes ``best.pt`` when the monitored metric improves and ``last.pt`` after every epoch (and on
    interruption, mid-epoch); restores the best weights when training ends."""

    def __init__(self, folder: Path, *, meta: dict[str, Any]) -> None:
        self.folder, self.meta = folder, meta

    def payload(self, trainer: Trainer, *, full: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"model": trainer.checkpoint_model.state_dict(), "state": trainer.state.to_dict(),
                               "meta": self.meta}
        if full:
            out.update(optimizer=trainer.optimizer.state_dict(), scaler=trainer.scaler.state_dict(),
                       scheduler=trainer.scheduler.state_dict() if trainer.scheduler is not None else None,
                       rng=capture_rng())
        return out

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        if trainer.state.best_epoch == trainer.state.epoch:
            save_checkpoint(self.folder / BEST, self.payload(trainer, full=False))
        save_checkpoint(self.folder / LAST, self.payload(trainer, full=True))

    def on_interrupt(self, trainer: Trainer) -> None:
        save_checkpoint(self.folder / LAST, self.payload(trainer, full=True))

    def on_fit_end(self, trainer: Trainer) -> None:
        if (self.folder / BEST).is_file():
            trainer.checkpoint_model.load_state_dict(load_checkpoint(self.folder / BEST)["model"])


class MetricsLog:
    """Appends one JSON line per epoch to ``metrics.jsonl``.

    On (re)start, lines for epochs after the checkpoint's are dropped: a crash between writing the
    line and the checkpoint must not leave a duplicate epoch in the log.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_fit_start(self, trainer: Trainer) -> None:
        if self.path.is_file():
            kept = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                    if line.strip() and json.loads(line)["epoch"] <= trainer.state.epoch]
            atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        record = {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in metrics.items()}
        record["best"] = trainer.state.best_epoch == trainer.state.epoch
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")


class Console:
    """A progress bar per epoch (loss, running metric, images/s) and one summary line per epoch."""

    def __init__(self, *, progress_bar: bool, stream=None) -> None:
        self.progress_bar, self.stream = progress_bar, stream or sys.stderr
        self.bar = None

    def on_epoch_start(self, trainer: Trainer) -> None:
        if not self.progress_bar:
            return
        from tqdm.auto import tqdm

        loader = trainer.loaders["train"]
        total = len(loader) + trainer.state.batch
        # disable=None: no bar when the stream is not a terminal (CI logs, files)
        self.bar = tqdm(total=total, initial=trainer.state.batch, leave=False, file=self.stream, disable=None,
                        desc=f"epoch {trainer.state.epoch + 1}/{trainer.epochs}", unit="batch", dynamic_ncols=True)

    def on_batch_end(self, trainer: Trainer, loss: float, images: int) -> None:
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

    def on_interrupt(self, trainer: Trainer) -> None:
        self._close()

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        self._close()
        shown = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items()
                          if k not in ("epoch",) and isinstance(v, float))
        star = " *" if trainer.state.best_epoch == trainer.state.epoch else ""
        print(f"epoch {metrics['epoch']}/{trainer.epochs}  {shown}{star}", file=self.stream, flush=True)
