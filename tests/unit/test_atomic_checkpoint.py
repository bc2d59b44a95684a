"""Crash-safe writes, checkpoints loadable with weights_only=True, and RNG capture/restore."""

from __future__ import annotations

import os
import random
import stat
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

from conftest import TINY_BACKBONE
from plantpheno.files.atomic import atomic_open, atomic_write_bytes, atomic_write_text, atomic_write_with
from plantpheno.errors import IntegrityError, RunDirError
from plantpheno.training.checkpoint import FORMAT, capture_rng, load_checkpoint, restore_rng, save_checkpoint


class _Boom(RuntimeError):
    pass


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ----------------------------------------------------------------------------------------------
# Atomic writes
# ----------------------------------------------------------------------------------------------


def test_atomic_write_text_creates_and_replaces(tmp_path) -> None:
    path = tmp_path / "sub" / "dir" / "config.yaml"  # parents are created
    atomic_write_text(path, "first\n")
    assert path.read_text(encoding="utf-8") == "first\n"
    atomic_write_text(path, "zweite Größe ✓\nline2\n")
    assert path.read_bytes() == "zweite Größe ✓\nline2\n".encode()  # UTF-8, newlines untranslated
    atomic_write_text(path, "")
    assert path.read_text() == ""
    assert _files(path.parent) == ["config.yaml"]


def test_atomic_write_bytes_and_with(tmp_path) -> None:
    path = tmp_path / "blob.bin"
    atomic_write_bytes(path, b"\x00\x01old")
    atomic_write_with(path, lambda fh: fh.write(b"\xffnew"))
    assert path.read_bytes() == b"\xffnew"
    assert _files(tmp_path) == ["blob.bin"]


def test_a_reader_sees_the_old_file_until_the_write_completes(tmp_path) -> None:
    path = tmp_path / "metrics.json"
    atomic_write_text(path, "old")
    seen = {}

    def writer(fh) -> None:
        fh.write(b"new content, half")
        fh.flush()
        seen["during"] = path.read_text()
        seen["siblings"] = _files(tmp_path)
        fh.write(b" and the rest")

    atomic_write_with(path, writer)
    assert seen["during"] == "old"
    assert len(seen["siblings"]) == 2  # the temporary file lives next to the target (same filesystem)
    assert path.read_text() == "new content, half and the rest"
    assert _files(tmp_path) == ["metrics.json"]


@pytest.mark.parametrize("error", [_Boom, KeyboardInterrupt])
def test_a_writer_that_fails_mid_write_leaves_the_old_file_and_no_temp_files(tmp_path, error) -> None:
    path = tmp_path / "last.pt"
    atomic_write_bytes(path, b"old checkpoint")

    def writer(fh) -> None:
        fh.write(b"partial" * 1000)
        raise error("disk full")

    with pytest.raises(error):
        atomic_write_with(path, writer)
    assert path.read_bytes() == b"old checkpoint"
    assert _files(tmp_path) == ["last.pt"]

    with pytest.raises(error):
        with atomic_open(path, "w") as fh:
            fh.write("partial text")
            raise error("crash")
    assert path.read_bytes() == b"old checkpoint"
    assert _files(tmp_path) == ["last.pt"]


def test_a_failed_first_write_creates_nothing(tmp_path) -> None:
    def writer(fh) -> None:
        fh.write(b"x")
        raise _Boom

    with pytest.raises(_Boom):
        atomic_write_with(tmp_path / "new.pt", writer)
    assert _files(tmp_path) == []


def test_atomic_open_rejects_other_modes(tmp_path) -> None:
    for mode in ("a", "r", "w+", "ab"):
        with pytest.raises(ValueError, match="mode"):
            with atomic_open(tmp_path / "x", mode):
                pass
    assert _files(tmp_path) == []


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_atomic_files_get_normal_permissions(tmp_path) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    path = tmp_path / "atomic.txt"
    atomic_write_text(path, "x")
    # Like open(): not the 0600 of a temporary file, so run folders stay readable as the umask allows.
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
    path.chmod(0o640)
    atomic_write_text(path, "y")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # replacing keeps the existing file's mode


# ----------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------


def _model_and_optimizer(seed: int):
    torch.manual_seed(seed)
    model = timm.create_model(TINY_BACKBONE, num_classes=3)
    return model, torch.optim.AdamW(model.parameters(), lr=0.01)


def _step(model, optimizer) -> None:
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    optimizer.zero_grad()
    F.cross_entropy(model(x), torch.tensor([0, 1, 2, 0])).backward()
    optimizer.step()


def test_checkpoint_round_trip(tmp_path) -> None:
    model, optimizer = _model_and_optimizer(0)
    model.train()
    _step(model, optimizer)
    payload = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": capture_rng(),
               "state": {"epoch": 2, "best_value": 0.75, "best_epoch": None},
               "meta": {"class_names": ["healthy", "rust"], "mean": [0.5, 0.5, 0.5], "task": "classification"}}
    path = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint(path, payload)
    assert _files(path.parent) == ["last.pt", "last.pt.sha256"]

    plain = torch.load(path, weights_only=True)  # no plantpheno code needed to read it
    assert plain["format"] == FORMAT
    loaded = load_checkpoint(path)
    assert loaded["format"] == FORMAT
    assert loaded["state"] == payload["state"] and loaded["meta"] == payload["meta"]

    model2, optimizer2 = _model_and_optimizer(1)
    assert not torch.equal(model2.state_dict()["conv1.0.weight"], model.state_dict()["conv1.0.weight"])
    model2.load_state_dict(loaded["model"])
    optimizer2.load_state_dict(loaded["optimizer"])
    for (key, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), key
    exp_avg = optimizer.state_dict()["state"][0]["exp_avg"]
    assert torch.equal(optimizer2.state_dict()["state"][0]["exp_avg"], exp_avg)

    model2.train()
    _step(model, optimizer)
    _step(model2, optimizer2)  # identical state -> identical next update
    for (key, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), key


def test_saving_again_replaces_the_checkpoint_atomically(tmp_path) -> None:
    path = tmp_path / "best.pt"
    save_checkpoint(path, {"state": {"epoch": 1}})
    save_checkpoint(path, {"state": {"epoch": 2}})
    assert load_checkpoint(path)["state"] == {"epoch": 2}
    with pytest.raises(Exception):  # noqa: B017 - whatever pickling raises for a lambda
        save_checkpoint(path, {"state": {"epoch": 3}, "model": {"w": torch.ones(100)}, "bad": lambda: None})
    assert load_checkpoint(path)["state"] == {"epoch": 2}
    assert _files(tmp_path) == ["best.pt", "best.pt.sha256"]


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def _write_bad(kind: str, path: Path) -> None:
    if kind == "foreign":
        torch.save({"model": {"w": torch.ones(2)}, "epoch": 3}, path)  # a torch file, not ours
    elif kind == "wrong_format":
        torch.save({"format": "plantpheno-checkpoint/999"}, path)
    elif kind == "not_a_dict":
        torch.save([torch.ones(2)], path)
    elif kind == "text":
        path.write_text("this is not a checkpoint\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        save_checkpoint(path, {"model": {"w": torch.arange(5000.0)}})
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "pickled_object":
        torch.save({"format": FORMAT, "x": _Exploit(path.with_name("pwned"))}, path)


@pytest.mark.parametrize("kind", ["foreign", "wrong_format", "not_a_dict", "text", "empty", "truncated",
                                  "pickled_object"])
def test_bad_checkpoint_files_raise_run_dir_error_naming_them(tmp_path, kind) -> None:
    path = tmp_path / f"{kind}.pt"
    _write_bad(kind, path)
    with pytest.raises((RunDirError, IntegrityError)) as err:  # truncated: its SHA-256 no longer matches
        load_checkpoint(path)
    assert str(path) in str(err.value)
    if kind in ("foreign", "wrong_format", "not_a_dict"):
        assert "not a plantpheno checkpoint" in str(err.value)
    assert not (tmp_path / "pwned").exists()


def test_missing_checkpoint_raises_run_dir_error(tmp_path) -> None:
    path = tmp_path / "checkpoints" / "last.pt"
    with pytest.raises(RunDirError, match="does not exist") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


# ----------------------------------------------------------------------------------------------
# RNG state
# ----------------------------------------------------------------------------------------------


def _draw() -> tuple:
    return (torch.rand(4).tolist(), torch.randint(0, 1000, (3,)).tolist(), np.random.rand(3).tolist(),
            np.random.standard_normal(3).tolist(), [random.random() for _ in range(3)], random.gauss(0, 1),
            random.randrange(10**9))


@pytest.mark.parametrize("through_file", [False, True])
def test_capture_and_restore_rng_reproduce_the_next_numbers(tmp_path, through_file) -> None:
    torch.manual_seed(11), np.random.seed(11), random.seed(11)
    # Leave cached Gaussians behind (python's gauss_next, numpy's has_gauss) so they must be restored too.
    random.gauss(0, 1)
    np.random.standard_normal()
    state = capture_rng()
    if through_file:
        save_checkpoint(tmp_path / "rng.pt", {"rng": state})
        state = torch.load(tmp_path / "rng.pt", weights_only=True)["rng"]
    expected = _draw()
    _draw()  # move every generator on
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    restore_rng(state)
    assert _draw() == expected


# ----------------------------------------------------------------------------------------------
# Temporary files of killed writers, and writes the disk refuses
# ----------------------------------------------------------------------------------------------


def _dead_pid() -> int:
    import subprocess
    import sys

    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)


def _temp_name(target: str, pid: int) -> str:
    from plantpheno.files import atomic

    return f".{target}.p{pid}-{atomic._HOST}-abcd1234.tmp"


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(tmp_path) -> None:
    import subprocess
    import sys

    stale = tmp_path / _temp_name("last.pt", _dead_pid())
    stale.write_bytes(b"half a checkpoint")
    other = tmp_path / _temp_name("best.pt", _dead_pid())  # another file's: left to that file's next write
    other.write_bytes(b"x")
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        busy = tmp_path / _temp_name("last.pt", alive.pid)  # a live writer's: kept
        busy.write_bytes(b"being written")
        atomic_write_bytes(tmp_path / "last.pt", b"new")
        assert not stale.exists() and other.exists() and busy.exists()
        os.utime(busy, (1_000_000, 1_000_000))  # written long before that process started: a reused PID
        atomic_write_bytes(tmp_path / "last.pt", b"newer")
        assert not busy.exists()
    finally:
        alive.kill()
        alive.wait()
    assert (tmp_path / "last.pt").read_bytes() == b"newer"


def test_a_resume_sweep_removes_every_temporary_file_under_the_run(tmp_path) -> None:
    from plantpheno.files.atomic import remove_stale_temp_files_under

    (tmp_path / "checkpoints").mkdir()
    legacy = tmp_path / "checkpoints" / ".last.pt.k2j4x9qa.tmp"  # named before temporary files named their writer
    legacy.write_bytes(b"x")
    dead = tmp_path / _temp_name("run.json", _dead_pid())
    dead.write_text("{")
    keep = tmp_path / "checkpoints" / "notes.tmp"  # not a temporary file of ours
    keep.write_text("mine")
    assert set(remove_stale_temp_files_under(tmp_path)) == {legacy, dead}
    assert keep.exists()


@pytest.mark.skipif(os.name != "posix", reason="RLIMIT_FSIZE")
def test_a_write_the_disk_refuses_is_a_storage_error_naming_the_file_and_keeping_the_old_one(tmp_path) -> None:
    """torch.save through the zip writer used to end in "RuntimeError: unexpected pos"; a real EFBIG here."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import resource, signal, torch
        from pathlib import Path
        from plantpheno.errors import StorageError
        from plantpheno.training.checkpoint import save_checkpoint
        path = Path({str(tmp_path)!r}) / "last.pt"
        save_checkpoint(path, {{"w": torch.ones(10)}})
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
        try:
            save_checkpoint(path, {{"w": torch.ones(1_000_000)}})
        except StorageError as exc:
            print(exc)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == (f"cannot write {tmp_path / 'last.pt'}: file too large (the filesystem's or this "
                                  f"process's file size limit); the previous last.pt is unchanged")
    assert load_checkpoint(tmp_path / "last.pt")["w"].sum() == 10
    assert _files(tmp_path) == ["last.pt", "last.pt.sha256"]
