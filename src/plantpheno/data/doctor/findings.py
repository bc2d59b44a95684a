"""What the data checks found: :class:`Finding` (one problem, its size, its files and its fix) and
:class:`DataCheckReport` (all of them, written as ``data_check.json``).

``data_check.json`` (version 1)::

    {"version": 1,
     "summary": {"errors": int, "warnings": int, "infos": int, "images": int},
     "findings": [{"severity": "error|warning|info", "check": str, "message": str, "count": int, "fix": str,
                   "files": [[path, ...], ...],        # one list per duplicate group / per flagged image
                   "file_notes": [[note, ...], ...],   # the same shape: split, label, measure of each file
                   "details": {...}}],                 # figures of the check (accuracy, p-value, thresholds)
     "checks": {"ran": [id, ...], "skipped": {id: why}}, "seconds": {id: s}, "dataset_fingerprint": str}
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Severity = Literal["error", "warning", "info"]
REPORT_VERSION = 1
_ORDER = {"error": 0, "warning": 1, "info": 2}


@dataclass(frozen=True)
class Finding:
    """One problem the checks found: how bad (``severity``), which check, what and how many, how to fix it,
    and the files involved (``files``: one tuple per group of related files, ``file_notes`` in the same shape)."""

    severity: Severity
    check: str
    message: str
    count: int
    fix: str
    files: tuple[tuple[str, ...], ...] = ()
    file_notes: tuple[tuple[str, ...], ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"severity": self.severity, "check": self.check, "message": self.message, "count": self.count,
                "fix": self.fix, "files": [list(g) for g in self.files],
                "file_notes": [list(g) for g in self.file_notes], "details": dict(self.details)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Finding:
        return cls(data["severity"], data["check"], data["message"], int(data["count"]), data["fix"],
                   tuple(tuple(g) for g in data.get("files", ())), tuple(tuple(g) for g in data.get("file_notes", ())),
                   dict(data.get("details", {})))

    def as_warning(self) -> Finding:
        """The same finding at warning level (``data.checks.on_error: warn``)."""
        return Finding("warning", self.check, self.message, self.count, self.fix, self.files, self.file_notes,
                       {**self.details, "was": self.severity})

    def line(self, *, severity: bool = True) -> str:
        """One line for a terminal: severity, check, what and how many, the fix."""
        return (f"{self.severity:<7} " if severity else "") + f"{self.check}: {self.message} Fix: {self.fix}"

    def file_lines(self, limit: int = 10) -> list[str]:
        """The first ``limit`` groups of files, one line each, with their notes."""
        lines = []
        for i, group in enumerate(self.files[:limit]):
            notes = self.file_notes[i] if i < len(self.file_notes) else ()
            lines.append("  " + "  <->  ".join(f"{p} ({notes[j]})" if j < len(notes) and notes[j] else p
                                               for j, p in enumerate(group)))
        if len(self.files) > limit:
            lines.append(f"  ... and {len(self.files) - limit} more")
        return lines


@dataclass
class DataCheckReport:
    """Every finding of one run of the checks, with what ran, what was skipped (and why) and how long each took."""

    findings: list[Finding]
    images: int
    ran: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    fingerprint: str = ""

    def __post_init__(self) -> None:
        self.findings = sorted(self.findings, key=lambda f: (_ORDER[f.severity], f.check))

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    def with_errors_as_warnings(self) -> DataCheckReport:
        return DataCheckReport([f.as_warning() if f.severity == "error" else f for f in self.findings], self.images,
                               self.ran, self.skipped, self.seconds, self.fingerprint)

    def summary(self) -> dict[str, int]:
        counts = {"errors": 0, "warnings": 0, "infos": 0}
        for f in self.findings:
            counts[{"error": "errors", "warning": "warnings", "info": "infos"}[f.severity]] += 1
        return {**counts, "images": self.images}

    def to_json(self) -> dict[str, Any]:
        return {"version": REPORT_VERSION, "summary": self.summary(), "findings": [f.to_json() for f in self.findings],
                "checks": {"ran": self.ran, "skipped": self.skipped},
                "seconds": {k: round(v, 3) for k, v in self.seconds.items()}, "dataset_fingerprint": self.fingerprint}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DataCheckReport:
        checks = data.get("checks", {})
        return cls([Finding.from_json(f) for f in data["findings"]], int(data["summary"]["images"]),
                   list(checks.get("ran", [])), dict(checks.get("skipped", {})), dict(data.get("seconds", {})),
                   data.get("dataset_fingerprint", ""))

    def write(self, path: Path) -> None:
        from plantpheno.files.atomic import atomic_write_text

        # ASCII with \u escapes: a file name that is not UTF-8 (a lone surrogate) stays valid JSON in a UTF-8 file
        atomic_write_text(path, json.dumps(self.to_json(), indent=1) + "\n")

    @classmethod
    def read(cls, path: Path) -> DataCheckReport:
        return cls.from_json(json.loads(path.read_text(encoding="utf-8")))

    def headline(self) -> str:
        s = self.summary()
        return (f"data check of {self.images} images: {s['errors']} error(s), {s['warnings']} warning(s), "
                f"{s['infos']} note(s)")

    def tags(self) -> dict[str, str]:
        """What trackers record about the checks (tags): counts, the checks that found something, key figures."""
        s = self.summary()
        tags = {"data_check.errors": str(s["errors"]), "data_check.warnings": str(s["warnings"]),
                "data_check.findings": ",".join(f"{f.check}:{f.severity}:{f.count}" for f in self.findings
                                                if f.severity != "info") or "none"}
        for f in self.findings:
            for key, value in f.details.get("tags", {}).items():
                tags[f"data_check.{key}"] = str(value)
        return tags


def file_groups(groups: Iterable[Sequence[Any]]) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(str(p) for p in group) for group in groups)
