"""Running plantpheno as a user (or an attacker) does, and what every hostile input must end in: exit status 2,
a message naming what was wrong, and no Python traceback."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def plantpheno(*args: str, cwd: Path | None = None, timeout: float = 600, prefix: Sequence[str] = (),
               env: dict[str, str] | None = None, **popen) -> subprocess.CompletedProcess:
    """``python -m plantpheno ARGS`` in a new process (``prefix``: a command that runs it, e.g. unshare)."""
    return subprocess.run([*prefix, sys.executable, "-m", "plantpheno", *args], capture_output=True, text=True,
                          errors="backslashreplace", cwd=cwd, timeout=timeout,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}, **popen)


def start(*args: str, cwd: Path | None = None) -> subprocess.Popen:
    """``python -m plantpheno ARGS`` in the background (stdout and stderr to temporary files)."""
    return subprocess.Popen([sys.executable, "-m", "plantpheno", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, errors="backslashreplace", cwd=cwd,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})


def in_process(*args: str) -> tuple[int, str, str]:
    """The same command line through ``plantpheno.cli.main`` in this process (seconds faster than a new
    interpreter per case): an exception that escapes ``main`` is a traceback the user would have seen, and
    fails the test."""
    from plantpheno.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code if isinstance(exc.code, int) else 2
    return code, out.getvalue(), err.getvalue()


def assert_refused(code: int, stderr: str, *fragments: str, max_chars: int = 20_000) -> None:
    """Exit status 2, no traceback, a short message holding every fragment."""
    assert "Traceback" not in stderr, stderr[-3000:]
    assert code == 2, f"exit status {code}, expected 2; stderr:\n{stderr[-3000:]}"
    assert "error:" in stderr, stderr[-3000:]
    for fragment in fragments:
        assert fragment in stderr, f"{fragment!r} not in:\n{stderr[-3000:]}"
    assert len(stderr) <= max_chars, f"a {len(stderr):,}-character message"


def refused(result: subprocess.CompletedProcess, *fragments: str, max_chars: int = 20_000) -> None:
    assert_refused(result.returncode, result.stderr, *fragments, max_chars=max_chars)


def wait_for(condition: Callable[[], bool], *, timeout: float, poll: float = 0.05,
             proc: subprocess.Popen | None = None) -> bool:
    """Poll ``condition`` until it holds (True), ``timeout`` passes or ``proc`` ends (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc is not None and proc.poll() is not None:
            return condition()
        time.sleep(poll)
    return False


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL, as the out-of-memory killer or a pulled plug would: no handler runs."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)


def huge_png(path: Path, width: int, height: int) -> Path:
    """A real, valid 1-bit PNG of ``width`` x ``height`` black pixels, written without ever holding its pixels
    (zeros deflate ~1000:1: a 19000 x 19000 one is ~45 KB)."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    deflate = zlib.compressobj(9)
    data = b"".join(deflate.compress(row) for _ in range(height)) + deflate.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, greyscale
    chunks = b"".join(struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
                      for kind, body in ((b"IHDR", header), (b"IDAT", data), (b"IEND", b"")))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunks)
    return path


def can_mount_tmpfs() -> list[str] | None:
    """A command prefix that runs a shell in a private mount namespace where tmpfs can be mounted: ``unshare
    -m`` as root, ``unshare -rm`` (a user namespace) otherwise; None where neither works here."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    for prefix in ([unshare, "-m"], [unshare, "-rm"]):
        script = 'd=$(mktemp -d) && mount -t tmpfs -o size=1m tmpfs "$d"; rc=$?; umount "$d"; rmdir "$d"; exit $rc'
        probe = subprocess.run([*prefix, "sh", "-c", script], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return prefix
    return None
