"""The run directory's writer lock, between real processes: exclusive, named, released by the kernel when its
holder dies, not kept by forked children; and the fallback for filesystems without flock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from plantpheno.run import lock as runlock
from plantpheno.errors import RunDirError
from plantpheno.run.folder import RunDir


def _python(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _hold(run: Path, *, fork_child: bool = False) -> subprocess.Popen:
    """A process that takes the run's lock, says "held" and sleeps (optionally after forking a sleeping child,
    which says "forked", and printing the child's PID)."""
    return _python(f"""
        import os, sys, time
        from plantpheno.run.folder import RunDir
        lock = RunDir.of({str(run)!r}).lock("training").acquire()
        if {fork_child}:
            child = os.fork()
            if child == 0:  # the fork hooks have run by now: say so, for the test to wait on
                os.write(1, b"forked\\n"); time.sleep(60); os._exit(0)
            os.write(1, f"{{child}}\\n".encode())  # one write each: the two processes share the pipe
        print("held", flush=True)
        time.sleep(60)
    """)


def test_a_second_process_is_refused_naming_the_holder_and_the_kernel_frees_a_killed_holder(tmp_path):
    run = RunDir(tmp_path)
    holder = _hold(tmp_path)
    assert holder.stdout.readline().strip() == "held"
    info = run.holder()
    assert info["pid"] == holder.pid and info["purpose"] == "training"
    with pytest.raises(RunDirError, match=f"is in use: process {holder.pid} has been training it since"):
        run.lock("resuming").acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert run.lock_file.exists() and run.holder() is None  # the file stays; the lock does not
    with run.lock("resuming") as lock:
        assert lock.held and run.holder()["pid"] == os.getpid()
    assert not run.lock_file.exists() and run.holder() is None


def test_a_forked_child_does_not_keep_the_lock_after_its_parent_dies(tmp_path):
    holder = _hold(tmp_path, fork_child=True)
    # The parent's two lines and the child's "forked" arrive in any order; waiting for all three means the child
    # has closed its copy of the lock (under load it may not have run yet when the parent says "held").
    lines = {holder.stdout.readline().strip() for _ in range(3)}
    assert {"held", "forked"} <= lines
    (child,) = (int(line) for line in lines - {"held", "forked"})
    try:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        os.kill(child, 0)  # the child (a DataLoader worker, say) is still alive ...
        assert RunDir(tmp_path).holder() is None  # ... and holds nothing
    finally:
        os.kill(child, signal.SIGKILL)


def test_without_flock_the_file_is_the_lock_and_a_dead_holders_file_is_taken_over(tmp_path, monkeypatch):
    monkeypatch.setattr(runlock, "_flock_works", lambda folder: False)  # as on a filesystem without flock
    run = RunDir(tmp_path)
    lock = run.lock("training").acquire()
    assert run.holder()["pid"] == os.getpid()
    with pytest.raises(RunDirError, match=f"process {os.getpid()}"):
        run.lock("evaluating").acquire()
    lock.release()
    assert not run.lock_file.exists() and run.holder() is None

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = {"pid": int(gone.stdout), "host": __import__("socket").gethostname(), "purpose": "training",
             "since": "earlier", "process_started": time.time() - 100}
    run.lock_file.write_text(json.dumps(stale))
    assert run.holder() is None
    with run.lock("resuming"):
        assert run.holder()["pid"] == os.getpid()
