"""The clock of budget mode: deadlines that a candidate and the final run cannot run past.

Estimates only decide whether a candidate starts; what keeps a budget run within its budget is structural:

* a **candidate** gets a deadline (the budget's end less the time kept for the final run). Its backbone pass checks
  the clock after every batch (through the progress of the pass, :class:`PassClock`), and its training loop after
  every step (:class:`CandidateDeadline`); a candidate that reaches the deadline stops there. One that finished an
  epoch before it stops at the epoch's end instead, when the next epoch would not end in time, and is evaluated on
  what it reached; one stopped inside its pass or an epoch is dropped (:class:`DeadlineReached`).
* the **final run** (:class:`FinalDeadline`) never stops inside an epoch (it has to end as a model): it starts no
  epoch (nor phase) that its measured (or the candidate's) epoch time says would end past its training deadline.

Every deadline takes its clock (``now``) as an argument, so tests drive it with a fake one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from plantpheno.reporting import Progress, Reporter
from plantpheno.training.loop import EarlyExit

Clock = Callable[[], float]


class DeadlineReached(EarlyExit):
    """A candidate reached its deadline inside its backbone pass or an epoch: it ends without a figure."""

    status = "stopped"  # run.json: the reason names the deadline

    def __init__(self, where: str) -> None:
        self.where = where
        super().__init__(f"the budget's deadline came during {where}")


class CandidateDeadline:
    """Trainer callback of a candidate: stop before an epoch that would end past ``at`` (the run is then evaluated
    on its best epoch so far), and raise :class:`DeadlineReached` at the first step past ``at`` (the run ends
    without a figure). ``expected`` (phase -> seconds an epoch, estimated) keeps a phase from starting whose first
    epoch would not end in time. It records each phase's epoch seconds, which size the final run's epochs."""

    def __init__(self, at: float, *, expected: dict[str, float] | None = None, now: Clock = time.monotonic) -> None:
        self.at, self.now = at, now
        self.fired = False  # stopped early, at an epoch's end or inside one
        self.expected = dict(expected or {})
        self.epoch_s: dict[str, float] = {}  # phase -> the longest epoch seen (seconds)
        self._began = 0.0

    def on_fit_start(self, trainer: Any) -> None:
        self._began = self.now()
        phase = trainer.state.phase
        expected = self.epoch_s.get(phase, self.expected.get(phase, 0.0))
        if self._began + expected >= self.at:  # a phase whose first epoch would not end in time does not start
            trainer.should_stop = self.fired = True

    def on_epoch_start(self, trainer: Any) -> None:
        self._began = self.now()

    def on_batch_end(self, trainer: Any, loss: float, images: int) -> None:
        if self.now() >= self.at:
            self.fired = True
            raise DeadlineReached(f"epoch {trainer.state.epoch + 1} ({trainer.state.phase} phase)")

    def on_epoch_end(self, trainer: Any, metrics: dict[str, float]) -> None:
        now = self.now()
        phase = trainer.state.phase
        self.epoch_s[phase] = max(self.epoch_s.get(phase, 0.0), now - self._began)
        if trainer.state.epoch < trainer.epochs and now + self.epoch_s[phase] >= self.at:
            trainer.should_stop = self.fired = True


class FinalDeadline:
    """Trainer callback of the final run: no epoch starts that would end past ``at`` by the longest epoch seen in
    this phase, or, before one is seen, by ``expected`` (phase -> seconds an epoch, measured in the candidate).
    ``epochs`` counts the epochs it trained; ``fired`` says it stopped before the planned end."""

    def __init__(self, at: float, *, expected: dict[str, float], now: Clock = time.monotonic) -> None:
        self.at, self.expected, self.now = at, dict(expected), now
        self.fired = False
        self.epochs = 0
        self._began = 0.0

    def _stop_if_late(self, trainer: Any) -> None:
        if trainer.state.epoch < trainer.epochs and self.now() + self.expected.get(trainer.state.phase, 0.0) > self.at:
            trainer.should_stop = self.fired = True

    def on_fit_start(self, trainer: Any) -> None:
        self._stop_if_late(trainer)

    def on_epoch_start(self, trainer: Any) -> None:
        self._began = self.now()

    def on_epoch_end(self, trainer: Any, metrics: dict[str, float]) -> None:
        self.epochs += 1
        phase = trainer.state.phase
        self.expected[phase] = max(self.expected.get(phase, 0.0), self.now() - self._began)
        self._stop_if_late(trainer)


def fit_schedule(seconds: float, planned: dict[str, tuple[int, float]]) -> dict[str, int]:
    """The epochs of each phase (``planned``: phase -> (epochs, seconds an epoch), in training order) that fit in
    ``seconds``: the planned ones when they fit, else each phase's share cut in the same ratio (at least one head
    epoch; a fine-tune phase keeps at least one epoch when one fits after the head's, else none).

    The final run's learning-rate schedule is then laid over the epochs it can train, so it ends annealed; an
    epoch count cut by :class:`FinalDeadline` stops a schedule half way down (measured on the PlantVillage subset,
    2-core AMD EPYC at load ~8.5: 17 of 60 head epochs, learning rate still 0.0083 of 0.01 when the deadline came)."""
    need = sum(epochs * each for epochs, each in planned.values())
    if need <= seconds or need <= 0:
        return {phase: epochs for phase, (epochs, _) in planned.items()}
    ratio = max(0.0, seconds) / need
    fitted: dict[str, int] = {}
    left = seconds
    for i, (phase, (epochs, each)) in enumerate(planned.items()):
        n = int(epochs * ratio)
        if i == 0:
            n = max(1, n)  # the head always trains: a final run has to end as a model
        elif n == 0 and epochs and left >= each:
            n = 1
        fitted[phase] = min(epochs, n)
        left -= fitted[phase] * each
    return fitted


class PassClock:
    """The deadline of a candidate's backbone pass, checked after every batch through the pass's progress
    (:meth:`progress` wraps a reporter's), and the pass's measured seconds an image (``pass_s``, per pass)."""

    def __init__(self, at: float = float("inf"), *, now: Clock = time.monotonic) -> None:
        self.at, self.now = at, now
        self.fired = False
        self.passes: list[tuple[int, float]] = []  # (images, seconds) of each complete pass

    def progress(self, inner: Progress, desc: str) -> Progress:
        return _TimedProgress(inner, self, desc)

    def seconds_per_image(self) -> float | None:
        images = sum(n for n, _ in self.passes)
        return sum(s for _, s in self.passes) / images if images else None


class _TimedProgress:
    def __init__(self, inner: Progress, clock: PassClock, desc: str) -> None:
        self.inner, self.clock, self.desc = inner, clock, desc
        self.began, self.images = clock.now(), 0

    def update(self, n: int = 1) -> None:
        self.inner.update(n)
        self.images += n
        if self.clock.now() >= self.clock.at:
            self.clock.fired = True
            raise DeadlineReached(self.desc)

    def set_postfix(self, **values: Any) -> None:
        setter = getattr(self.inner, "set_postfix", None)
        if setter is not None:
            setter(**values)

    def close(self) -> None:
        self.inner.close()
        if self.images and not self.clock.fired and self.desc.startswith("backbone pass"):
            self.clock.passes.append((self.images, self.clock.now() - self.began))


def reporter_with_clock(reporter: Reporter, clock: PassClock) -> Reporter:
    """``reporter`` whose progress bars (the backbone passes') check ``clock``."""
    return _ClockedReporter(reporter, clock)


class _ClockedReporter:
    def __init__(self, inner: Reporter, clock: PassClock) -> None:
        self.inner, self.clock = inner, clock

    def info(self, message: str) -> None:
        self.inner.info(message)

    def warning(self, message: str) -> None:
        self.inner.warning(message)

    def progress(self, *, total: int | None, desc: str, unit: str = "it", initial: int = 0) -> Progress:
        return self.clock.progress(self.inner.progress(total=total, desc=desc, unit=unit, initial=initial), desc)
