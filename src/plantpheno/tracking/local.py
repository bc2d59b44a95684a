"""The always-on local log: ``RUN_DIR/tracking/`` (params, tags, every metric, artifacts, status)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from plantpheno.files.atomic import atomic_write_text
from plantpheno.run.folder import TrackingDir


class LocalTracker:
    """Plain files, readable without any tracking library (``plantpheno runs`` uses them)."""

    name = "local"

    def __init__(self, *, folder: TrackingDir) -> None:
        self.files = folder
        self._lock = threading.Lock()

    def start(self, *, run_name: str, resume_id: str | None) -> str | None:
        self.files.path.mkdir(parents=True, exist_ok=True)
        return None

    def _merge_json(self, path: Path, values: Mapping[str, object]) -> None:
        with self._lock:
            current = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
            current.update(values)
            atomic_write_text(path, json.dumps(current, indent=2, sort_keys=True) + "\n")

    def log_params(self, params: Mapping[str, str]) -> None:
        self._merge_json(self.files.params, params)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._merge_json(self.files.tags, tags)

    def log_metrics(self, metrics: Mapping[str, float], *, step: int, axis: str = "epoch") -> None:
        now = time.time()
        lines = "".join(json.dumps({"key": k, "value": v, "step": step, "axis": axis, "time": now}) + "\n"
                        for k, v in metrics.items())
        with self._lock, self.files.metrics.open("a", encoding="utf-8") as fh:
            fh.write(lines)

    def log_artifact(self, path: Path, *, folder: str | None = None) -> None:
        with self._lock, self.files.artifacts.open("a", encoding="utf-8") as fh:
            fh.write(f"{folder or '.'}\t{path}\n")

    def finish(self, status: str) -> None:
        self._merge_json(self.files.status, {"status": status})
