"""Running several trackers as one: fan-out, failure containment, system metrics."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from plantpheno.config import Config
from plantpheno.errors import ConfigError
from plantpheno.reporting import Reporter, default_reporter
from plantpheno.run.folder import RunDir
from plantpheno.tracking import Axis, RunStatus, Tracker, create_tracker

log = logging.getLogger(__name__)

class TrackerSet:
    """Calls every tracker in turn. A backend that raises (server down, disk full) is reported once and
    dropped; the others — always including the local log — carry on, and so does training."""

    def __init__(self, trackers: list[Tracker], *, reporter: Reporter | None = None) -> None:
        self.trackers = list(trackers)
        self.failed: dict[str, str] = {}
        self.reporter = default_reporter(reporter)
        self._lock = threading.Lock()  # the system-metrics thread logs too

    def _safely(self, tracker: Tracker, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(tracker, method)(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - any backend failure must not stop training
            self.trackers.remove(tracker)
            self.failed[tracker.name] = f"{type(exc).__name__}: {exc}"
            self.reporter.warning(f"tracking backend {tracker.name} failed in {method} ({type(exc).__name__}: "
                       f"{str(exc)[:300]}); it is switched off for this run, training goes on and the "
                       f"local log in the run directory stays complete")
            return None

    def _call(self, method: str, *args: Any, **kwargs: Any) -> None:
        with self._lock:
            for tracker in list(self.trackers):
                self._safely(tracker, method, *args, **kwargs)

    def start(self, *, run_name: str, resume_ids: Mapping[str, str] | None = None) -> dict[str, str]:
        """Open every backend's run (re-open it when ``resume_ids`` has its id); return the new ids."""
        ids = {}
        with self._lock:
            for tracker in list(self.trackers):
                rid = self._safely(tracker, "start", run_name=run_name,
                                   resume_id=(resume_ids or {}).get(tracker.name))
                if rid:
                    ids[tracker.name] = rid
        return ids

    def log_params(self, params: Mapping[str, str]) -> None:
        self._call("log_params", params)

    def log_metrics(self, metrics: Mapping[str, float], *, step: int, axis: Axis = "epoch") -> None:
        finite = {k: float(v) for k, v in metrics.items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        if finite:
            self._call("log_metrics", finite, step=step, axis=axis)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._call("set_tags", {k: str(v) for k, v in tags.items()})

    def log_artifact(self, path: Path, *, folder: str | None = None) -> None:
        if path.is_file():
            self._call("log_artifact", path, folder=folder)

    def finish(self, status: RunStatus) -> None:
        self._call("finish", status)

    def hints(self) -> list[str]:
        return [t.ui_hint for t in self.trackers if getattr(t, "ui_hint", None)]


def build_trackers(config: Config, run: RunDir, *, reporter: Reporter | None = None) -> TrackerSet:
    """The local log plus every configured backend. A backend whose library is missing is a config error."""
    trackers = [create_tracker("local", config, run)]
    for name in config.tracking.backends:
        try:
            trackers.append(create_tracker(name, config, run))
        except ImportError as exc:
            raise ConfigError(f"tracking.backends includes {name} but it cannot be imported ({exc}); install it "
                              f"with: pip install 'plantpheno[{name}]'") from None
    return TrackerSet(trackers, reporter=reporter)


class SystemMonitor:
    """Samples CPU %, RAM, process memory and (with CUDA) GPU utilisation/memory: once when training starts, every
    ``interval`` seconds on a background thread, and at the end of every epoch (:meth:`record`), so even a run of
    a few seconds has its figures. ``interval`` 0 switches it off."""

    def __init__(self, trackers: TrackerSet, *, interval: float) -> None:
        self.trackers, self.interval = trackers, interval
        self.step: Callable[[], int] = lambda: 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._process: Any = None

    def start(self, step: Callable[[], int]) -> None:
        """Sample now and every ``interval`` seconds until :meth:`stop`; ``step`` gives the optimizer step to log at."""
        self.step = step
        if self.interval <= 0 or self._thread is not None:
            return
        import psutil

        self._process = psutil.Process()
        self._stop.clear()
        # the start sample belongs to the step training starts at, however late the thread gets to it (on a busy
        # machine the first steps can finish during its 0.1 s CPU window)
        self._thread = threading.Thread(target=self._run, args=(step(),), name="plantpheno-system-metrics",
                                        daemon=True)
        self._thread.start()

    def _run(self, first_step: int) -> None:
        import psutil

        # CPU % is measured over a window: the first one over 0.1 s, on this thread rather than training's
        self.record(cpu_percent=psutil.cpu_percent(interval=0.1), step=first_step)
        while not self._stop.wait(self.interval):
            self.record()

    def record(self, *, cpu_percent: float | None = None, step: int | None = None) -> None:
        """Log one sample now (the trainer's callback calls this at each epoch's end), at ``step`` or the current
        optimizer step."""
        if self._process is not None:
            self.trackers.log_metrics(self.sample(cpu_percent=cpu_percent),
                                      step=self.step() if step is None else step, axis="step")

    def sample(self, *, cpu_percent: float | None = None) -> dict[str, float]:
        """CPU % since the previous sample (or ``cpu_percent``), memory, and GPU figures on CUDA."""
        import psutil

        memory = psutil.virtual_memory()
        values = {"system/cpu_percent": psutil.cpu_percent(interval=None) if cpu_percent is None else cpu_percent,
                  "system/ram_used_gb": (memory.total - memory.available) / 1e9,
                  "system/ram_percent": memory.percent,
                  "system/process_rss_gb": self._process.memory_info().rss / 1e9}
        values.update(_gpu_sample())
        return values

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


def _gpu_sample() -> dict[str, float]:
    import torch

    if not torch.cuda.is_available():
        return {}
    values = {"system/gpu_memory_allocated_gb": torch.cuda.memory_allocated() / 1e9,
              "system/gpu_memory_reserved_gb": torch.cuda.memory_reserved() / 1e9}
    try:
        values["system/gpu_utilization"] = float(torch.cuda.utilization())
    except Exception:  # noqa: BLE001 - needs NVML (pynvml); memory figures still help
        pass
    return values
