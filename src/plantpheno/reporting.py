"""How the core tells a person what is happening, without knowing about screens.

Core modules (the pipeline, tracking, tuning) never print: they are given a :class:`Reporter` and send
it lines (``info``, ``warning``) and progress (``progress``). The command line injects
:class:`ConsoleReporter`, which prints to stderr; the default everywhere else is
:class:`LoggingReporter`, which hands the lines to Python's ``logging`` (logger ``plantpheno``), as a
library should, so a notebook or another program decides what it shows.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol, TextIO


class Progress(Protocol):
    """A running count of work done (a progress bar on a terminal)."""

    def update(self, n: int = 1) -> None: ...

    def set_postfix(self, **values: Any) -> None: ...

    def close(self) -> None: ...


class Reporter(Protocol):
    """Where the core sends what a person should see."""

    def info(self, message: str) -> None:
        """A line about what is happening (a phase starts, a run directory, a trial's result)."""
        ...

    def warning(self, message: str) -> None:
        """Something the person should act on or know, though the work goes on."""
        ...

    def progress(self, *, total: int | None, desc: str, unit: str = "it", initial: int = 0) -> Progress:
        """A progress display for ``total`` units of work (``initial`` already done)."""
        ...


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **values: Any) -> None:
        pass

    def close(self) -> None:
        pass


class LoggingReporter:
    """Lines to ``logging.getLogger("plantpheno")`` (info at INFO, warnings at WARNING); no progress bars."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger("plantpheno")

    def info(self, message: str) -> None:
        self.logger.info(message)

    def warning(self, message: str) -> None:
        self.logger.warning(message)

    def progress(self, *, total: int | None, desc: str, unit: str = "it", initial: int = 0) -> Progress:
        return _NoProgress()


class LineProgress:
    """Progress as plain lines, for a stream that is not a terminal (a CI log, a file, ``nohup``): at most one
    line every ``interval`` seconds, ``desc: done/total unit (percent), rate, ETA``, and a closing line with the
    time taken once any line was written. Work that ends within ``interval`` writes nothing."""

    def __init__(self, write: Callable[[str], None], *, total: int | None, desc: str, unit: str = "it",
                 initial: int = 0, interval: float = 10.0) -> None:
        self.write, self.total, self.desc, self.unit, self.interval = write, total, desc, unit, interval
        self.n = self.start_n = initial
        self.start = self.last = time.monotonic()
        self.postfix = ""
        self.written = False

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self.written = True
            self.write(self._line(now))

    def set_postfix(self, **values: Any) -> None:
        values.pop("refresh", None)
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if self.written:
            elapsed = time.monotonic() - self.start
            self.write(f"{self.desc}: {self.n}{'/' + str(self.total) if self.total else ''} {self.unit} "
                       f"in {_duration(elapsed)}" + (f" ({self.postfix})" if self.postfix else ""))
            self.written = False

    def _line(self, now: float) -> str:
        elapsed = now - self.start
        rate = (self.n - self.start_n) / elapsed if elapsed > 0 else 0.0
        text = f"{self.desc}: {self.n}"
        if self.total:
            text += f"/{self.total} {self.unit} ({self.n / self.total:.0%})"
        else:
            text += f" {self.unit}"
        text += f", {rate:.3g} {self.unit}/s"
        if self.total and rate > 0:
            text += f", ETA {_duration(max(0.0, (self.total - self.n) / rate))}"
        return text + (f", {self.postfix}" if self.postfix else "")


def _duration(seconds: float) -> str:
    whole = round(seconds)
    if whole >= 3600:
        return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"
    return f"{whole // 60}:{whole % 60:02d}"


class ConsoleReporter:
    """What the command line shows: lines on stderr (warnings prefixed ``plantpheno: warning:``), and progress as
    tqdm bars on a terminal, or as plain periodic lines (:class:`LineProgress`, every ``line_interval`` seconds)
    when the stream is not one (CI logs, files)."""

    def __init__(self, stream: TextIO | None = None, *, progress_bars: bool = True, line_interval: float = 10.0,
                 terminal: bool | None = None) -> None:
        self._stream = stream
        self.progress_bars = progress_bars
        self.line_interval = line_interval
        self._terminal = terminal  # None: ask the stream

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stderr  # looked up late: tests swap sys.stderr

    def info(self, message: str) -> None:
        print(message, file=self.stream, flush=True)

    def warning(self, message: str) -> None:
        print(f"plantpheno: warning: {message}", file=self.stream, flush=True)

    def progress(self, *, total: int | None, desc: str, unit: str = "it", initial: int = 0) -> Progress:
        if not self.progress_bars:
            return _NoProgress()
        terminal = self._terminal if self._terminal is not None else _isatty(self.stream)
        if not terminal:
            return LineProgress(self.info, total=total, desc=desc, unit=unit, initial=initial,
                                interval=self.line_interval)
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, leave=False, file=self.stream, desc=desc, unit=unit,
                    dynamic_ncols=True)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class RecordingReporter:
    """Keeps every line (``lines``: ``(level, message)``) and every progress display it was asked for
    (``progress_calls``: ``(desc, total, unit, units done at close)``); for tests and for callers that show
    them later."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []
        self.progress_calls: list[list[Any]] = []

    def info(self, message: str) -> None:
        self.lines.append(("info", message))

    def warning(self, message: str) -> None:
        self.lines.append(("warning", message))

    def progress(self, *, total: int | None, desc: str, unit: str = "it", initial: int = 0) -> Progress:
        record = [desc, total, unit, initial]
        self.progress_calls.append(record)
        return _Counted(record)


class _Counted(_NoProgress):
    def __init__(self, record: list[Any]) -> None:
        self.record = record

    def update(self, n: int = 1) -> None:
        self.record[3] += n


def default_reporter(reporter: Reporter | None) -> Reporter:
    """``reporter``, or the logging reporter when the caller gave none."""
    return reporter if reporter is not None else LoggingReporter()
