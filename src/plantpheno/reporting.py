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


class ConsoleReporter:
    """What the command line shows: lines on stderr (warnings prefixed ``plantpheno: warning:``) and tqdm
    bars, which tqdm leaves out when the stream is not a terminal (CI logs, files)."""

    def __init__(self, stream: TextIO | None = None, *, progress_bars: bool = True) -> None:
        self._stream = stream
        self.progress_bars = progress_bars

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
        from tqdm.auto import tqdm

        # disable=None: no bar when the stream is not a terminal
        return tqdm(total=total, initial=initial, leave=False, file=self.stream, disable=None, desc=desc,
                    unit=unit, dynamic_ncols=True)


class RecordingReporter:
    """Keeps every line (``lines``: ``(level, message)``); for tests and for callers that show them later."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def info(self, message: str) -> None:
        self.lines.append(("info", message))

    def warning(self, message: str) -> None:
        self.lines.append(("warning", message))

    def progress(self, *, total: int | None, desc: str, unit: str = "it", initial: int = 0) -> Progress:
        return _NoProgress()


def default_reporter(reporter: Reporter | None) -> Reporter:
    """``reporter``, or the logging reporter when the caller gave none."""
    return reporter if reporter is not None else LoggingReporter()
