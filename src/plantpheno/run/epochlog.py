"""Reading a run's epoch log (``metrics.jsonl``: one JSON object per epoch, appended as training goes).

A line can be unreadable: torn by a crash or a full disk while it was appended, cut by a copy, edited by hand.
Every reader here gets the line numbers of such lines with the records, so that it can say which lines it
skipped (file and line number) instead of dropping them silently; the training loop keeps them aside on resume
(``metrics.jsonl.unreadable``) rather than deleting them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

UNREADABLE_SUFFIX = ".unreadable"


@dataclass(frozen=True)
class EpochLog:
    """The records of an epoch log, in file order, and the lines that are not epoch records."""

    path: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    record_text: list[str] = field(default_factory=list)  # each record's line, as written
    unreadable: list[int] = field(default_factory=list)  # 1-based numbers of the lines that are not epoch records
    unreadable_text: list[str] = field(default_factory=list)  # those lines, as written

    def describe_unreadable(self) -> str:
        """``metrics.jsonl line(s) 3, 7 ...``: what a warning names (empty when every line was read)."""
        if not self.unreadable:
            return ""
        shown = ", ".join(str(n) for n in self.unreadable[:10])
        more = f" and {len(self.unreadable) - 10} more" if len(self.unreadable) > 10 else ""
        return (f"{self.path}: line{'s' if len(self.unreadable) > 1 else ''} {shown}{more} "
                f"{'are' if len(self.unreadable) > 1 else 'is'} not an epoch record (a line torn by a crash or a "
                f"full disk, or edited)")


def read_epoch_log(path: Path) -> EpochLog:
    """Parse ``path`` (missing: empty). A record is a JSON object whose ``epoch`` is an integer."""
    log = EpochLog(Path(path))
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return log
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict) and isinstance(record.get("epoch"), int) \
                and not isinstance(record.get("epoch"), bool):
            log.records.append(record)
            log.record_text.append(line)
        else:
            log.unreadable.append(number)
            log.unreadable_text.append(line)
    return log


def unreadable_path(path: Path) -> Path:
    """Where unreadable lines are kept when the log is rewritten (``metrics.jsonl.unreadable``)."""
    return path.with_name(path.name + UNREADABLE_SUFFIX)
