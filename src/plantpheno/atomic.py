"""Crash-safe file writes: write to a temporary file in the same folder, fsync, rename.

A reader (or a crash at any moment) sees either the old file or the complete new one, never a
partial file: ``os.replace`` is atomic on POSIX and Windows when both paths are on one filesystem,
which holds because the temporary file lives in the destination folder.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; on clean exit fsync and rename it over ``path``.

    If the body raises, the temporary file is removed and ``path`` is left untouched.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open mode must be 'wb' or 'w', got {mode!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8", "newline": ""} if mode == "w" else {})) as fh:
            # mkstemp makes the file 0600; give it the mode a plain open() would (or keep the old file's).
            os.chmod(tmp_name, _final_mode(target))
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(target.parent)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Atomically replace ``path`` with ``text`` (UTF-8)."""
    with atomic_open(path, "w") as fh:
        fh.write(text)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Atomically replace ``path`` with ``data``."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_with(path: str | os.PathLike[str], writer: Callable[[IO[bytes]], None]) -> None:
    """Atomically replace ``path`` with whatever ``writer(binary_file)`` writes (e.g. torch.save, savefig)."""
    with atomic_open(path, "wb") as fh:
        writer(fh)


def _final_mode(target: Path) -> int:
    try:
        return os.stat(target).st_mode & 0o7777
    except OSError:
        return 0o666 & ~_UMASK


def _current_umask() -> int:
    mask = os.umask(0o022)  # the only portable way to read the umask is to set it; restored at once
    os.umask(mask)
    return mask


_UMASK = _current_umask()  # read once at import (os.umask is process-wide, not thread-safe)


def _fsync_dir(folder: Path) -> None:
    # Make the rename itself durable; not possible on every platform (e.g. Windows), so best effort.
    with contextlib.suppress(OSError):
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
