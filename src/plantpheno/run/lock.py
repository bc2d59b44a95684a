"""One writer per run directory: an exclusive lock held by whichever process trains, resumes or evaluates it.

The lock is ``fcntl.flock`` on ``RUN_DIR/run.lock``: the kernel releases it when its process ends, however
it ends (kill -9, out of memory, power loss), so a lock can never outlive its holder. The file also names
the holder (PID, host, command, since when) for the message a second writer gets. Readers (``plantpheno runs
list``) ask :func:`lock_holder`: a run whose ``run.json`` still says "running" while nobody holds its lock
crashed. Where ``flock`` is not available (Windows, some network filesystems) the file itself is the lock,
created exclusively, and a file whose process is gone on this machine (or whose PID now belongs to a newer
process) is taken over.

Forked children (DataLoader workers) close their copy of the lock's descriptor, so a worker that outlives a
killed trainer for a few seconds does not keep the run locked.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from plantpheno.errors import RunDirError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

_RETRY_S = 2.0  # a reader holds a shared lock for an instant; a writer that meets one retries this long
_HELD: dict[int, RunLock] = {}  # descriptor -> lock, to close in forked children


class RunLock:
    """The exclusive lock of one run directory; ``acquire()`` or ``with RunLock(...)``.

    ``purpose`` says what the holder does ("training", "resuming", "evaluating"), for other processes'
    messages."""

    def __init__(self, lock_file: Path, *, run_path: Path, purpose: str) -> None:
        self.lock_file, self.run_path, self.purpose = lock_file, run_path, purpose
        self._fd: int | None = None
        self._exclusive_file = False  # the fallback: the file's existence is the lock

    @property
    def held(self) -> bool:
        return self._fd is not None or self._exclusive_file

    def acquire(self) -> RunLock:
        """Take the lock, or raise :class:`RunDirError` naming the process that holds it."""
        if self.held:
            return self
        deadline = time.monotonic() + _RETRY_S
        while True:
            if fcntl is None or not _flock_works(self.lock_file.parent):
                self._acquire_exclusive_file()
                return self
            try:
                fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
            except OSError as exc:
                raise _cannot_lock(self.lock_file, exc) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                holder = _read_info(self.lock_file)
                if _alive(holder) or time.monotonic() > deadline:
                    raise RunDirError(_busy_message(self.run_path, holder)) from None
                time.sleep(0.05)  # a reader's shared lock, or a holder still writing its name: look again
                continue
            if not _same_file(fd, self.lock_file):  # the previous holder removed the file as we opened it
                os.close(fd)
                continue
            self._fd = fd
            _HELD[fd] = self
            _write_info(fd, self.purpose)
            return self

    def release(self) -> None:
        """Give the lock up (and remove its file: a finished run keeps no lock file)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            _HELD.pop(fd, None)
            with contextlib.suppress(OSError):
                self.lock_file.unlink()  # while still holding it: a newcomer re-checks the file it locked
            os.close(fd)  # closing the last descriptor releases the flock
        elif self._exclusive_file:
            self._exclusive_file = False
            with contextlib.suppress(OSError):
                self.lock_file.unlink()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    # -- the fallback without flock -----------------------------------------------------------
    def _acquire_exclusive_file(self) -> None:
        for _ in range(3):
            try:
                fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = _read_info(self.lock_file)
                if holder is not None and holder.get("host") == socket.gethostname() and not _alive(holder):
                    with contextlib.suppress(FileNotFoundError):
                        self.lock_file.unlink()  # left by a process that is gone
                    continue
                raise RunDirError(_busy_message(self.run_path, holder)) from None
            except OSError as exc:
                raise _cannot_lock(self.lock_file, exc) from None
            _write_info(fd, self.purpose)
            os.close(fd)
            self._exclusive_file = True
            return
        raise RunDirError(_busy_message(self.run_path, _read_info(self.lock_file)))


def lock_holder(lock_file: Path) -> dict[str, Any] | None:
    """Who holds the lock (the file's record, ``{}`` if unreadable), or None when no process holds it."""
    if fcntl is None or not _flock_works(lock_file.parent):
        info = _read_info(lock_file)
        return info if info is not None and (_alive(info) or info.get("host") != socket.gethostname()) else None
    try:
        fd = os.open(lock_file, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None  # no lock file: nobody writes this run
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_info(lock_file) or {}
    except OSError:
        return None
    finally:
        os.close(fd)  # also releases the shared lock, if it was taken
    return None


def _cannot_lock(lock_file: Path, exc: OSError) -> Exception:
    from plantpheno.files.atomic import STORAGE_ERRNOS, storage_error

    if exc.errno in STORAGE_ERRNOS:
        return storage_error(exc, lock_file, existed=False)
    return RunDirError(f"cannot lock {lock_file.parent}: {exc.strerror or exc}")


def _busy_message(run_path: Path, holder: dict[str, Any] | None) -> str:
    if not holder:
        return (f"run {run_path} is in use: another process holds its lock; wait for it to finish, or stop that "
                f"process first")
    where = "" if holder.get("host") == socket.gethostname() else f" on {holder.get('host')}"
    return (f"run {run_path} is in use: process {holder.get('pid')}{where} has been {holder.get('purpose', 'using')} "
            f"it since {holder.get('since', '?')} ({holder.get('command', '?')}); wait for it to finish, or stop "
            f"that process first")


def _write_info(fd: int, purpose: str) -> None:
    info = {"pid": os.getpid(), "host": socket.gethostname(), "purpose": purpose,
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "process_started": _process_started(os.getpid()),
            "command": " ".join(sys.argv)[:300]}
    with contextlib.suppress(OSError):  # a full disk must not stop a run from holding its lock
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode("utf-8", "surrogateescape"), 0)


def _read_info(lock_file: Path) -> dict[str, Any] | None:
    try:
        info = json.loads(lock_file.read_bytes().decode("utf-8", "surrogateescape"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _alive(info: dict[str, Any] | None) -> bool:
    """Whether the process a lock file names runs on this machine still (not a newer one with its PID)."""
    if not info or info.get("host") != socket.gethostname() or not isinstance(info.get("pid"), int):
        return False
    pid = info["pid"]
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        pass  # exists, owned by someone else
    started = _process_started(pid)
    recorded = info.get("process_started")
    return started is None or not isinstance(recorded, int | float) or abs(started - recorded) < 1.0


def _process_started(pid: int) -> float | None:
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:  # noqa: BLE001 - gone, or not ours to look at
        return None


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


_FLOCK_WORKS: dict[int, bool] = {}  # st_dev -> whether flock works on that filesystem


def _flock_works(folder: Path) -> bool:
    try:
        dev = os.stat(folder).st_dev
    except OSError:
        return True  # let the real attempt report the problem
    if dev not in _FLOCK_WORKS:
        import tempfile

        ok = True
        try:
            with tempfile.TemporaryFile(dir=folder) as probe:
                fcntl.flock(probe.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            ok = exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS)
        _FLOCK_WORKS[dev] = ok
    return _FLOCK_WORKS[dev]


def _close_in_child() -> None:
    """After fork: drop the child's copies of the lock descriptors (closing a copy does not unlock the parent's
    lock; LOCK_UN would), so the lock is released when the parent ends, not when its last worker does."""
    for fd, lock in list(_HELD.items()):
        lock._fd = None
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_child)
