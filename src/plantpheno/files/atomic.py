"""Crash-safe file writes: write to a temporary file in the same folder, fsync, rename.

A reader (or a crash at any moment) sees either the old file or the complete new one, never a
partial file: ``os.replace`` is atomic on POSIX and Windows when both paths are on one filesystem,
which holds because the temporary file lives in the destination folder.

Two things a crash can still leave, and how they are dealt with:

* a temporary file (``.last.pt.p<pid>-<host>-XXXXXXXX.tmp``) whose writer was killed: it names its
  process and machine, so the next write of the same file (or :func:`remove_stale_temp_files`, which a
  resumed run calls on its folder) deletes it once that process is gone;
* a full disk, a quota, a file size limit, a read-only filesystem or a permission problem: every write
  here turns it into one :class:`~plantpheno.errors.StorageError` that says what was being written,
  where, why, and that the previous file is unchanged.

A file written with ``checksum=True`` (checkpoints, weights, model package files) gets a sidecar
``NAME.sha256`` in ``sha256sum`` format (``cd FOLDER && sha256sum -c NAME.sha256`` checks it by hand), and
:func:`verify_checksum` checks it before the file is used. Why a sidecar: the file itself stays in its own
format (``torch.load``, safetensors and MLflow read it unchanged), a copied folder carries its sidecars, and a
file written before checksums existed simply has none (it still loads, reported once as unverified). The
sidecar never disagrees with its file, even after a crash between the two renames: it first lists the new
digest *and* the current file's, the file is renamed, then the sidecar is rewritten with the new digest only.

Text is written as UTF-8 with ``surrogateescape``: a file name that is not valid UTF-8 (read from the
filesystem as lone surrogates, ``os.fsdecode``) is written back as its original bytes, so it names the
same file when read again with ``errors="surrogateescape"``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import shutil
import socket
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from plantpheno.errors import IntegrityError, StorageError

TEXT_ENCODING = {"encoding": "utf-8", "errors": "surrogateescape"}

_HOST = hashlib.sha256(socket.gethostname().encode("utf-8", "surrogateescape")).hexdigest()[:6]
# .<target name>.p<pid>-<host>-<8 random characters from mkstemp>.tmp
_TEMP = re.compile(r"^\.(?P<name>.+)\.p(?P<pid>\d+)-(?P<host>[0-9a-f]{6})-[a-z0-9_]{8}\.tmp$")
_LEGACY_TEMP = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")  # written before temporary files named their writer
_ACTIVE: set[str] = set()  # temporary files this process is writing now
CHECKSUM_SUFFIX = ".sha256"
_UNVERIFIED_NOTED: set[str] = set()  # files without a sidecar already reported (once per process)
_CHUNK = 1 << 20
log = logging.getLogger("plantpheno")

# errors that mean "this cannot be written here", as opposed to a bug
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EPERM, errno.EROFS,
                            errno.ENOTDIR, errno.EEXIST, errno.EISDIR, errno.ENAMETOOLONG})
_REASONS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
            errno.EFBIG: "file too large (the filesystem's or this process's file size limit)",
            errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
            errno.EROFS: "read-only filesystem", errno.ENOTDIR: "a part of the path is a file, not a folder",
            errno.EEXIST: "a file is in the way of a folder", errno.EISDIR: "a folder of that name exists",
            errno.ENAMETOOLONG: "file name too long"}


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb", *, checksum: bool = False) -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; on clean exit fsync and rename it over ``path``.

    If the body raises, the temporary file is removed and ``path`` is left untouched. A write that fails
    for lack of space or permission raises :class:`StorageError` naming ``path``, and so does a ``path``
    that is there but is not a regular file (a link, a FIFO, a device, a folder): it is never replaced.
    ``checksum=True`` also writes the SHA-256 sidecar ``NAME.sha256`` (see the module docstring).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open mode must be 'wb' or 'w', got {mode!r}")
    target = Path(path)
    refuse_non_regular(target)
    existed = target.exists()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise storage_error(exc, target, existed=existed) from None
    with contextlib.suppress(OSError):
        remove_stale_temp_files(target.parent, name=target.name)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.p{os.getpid()}-{_HOST}-", suffix=".tmp",
                                        dir=target.parent)
    except OSError as exc:
        raise storage_error(exc, target, existed=existed) from None
    _ACTIVE.add(tmp_name)
    recorder: _RecordingFile | None = None
    try:
        with os.fdopen(fd, mode, **({**TEXT_ENCODING, "newline": ""} if mode == "w" else {})) as fh:
            # mkstemp makes the file 0600; give it the mode a plain open() would (or keep the old file's).
            os.chmod(tmp_name, _final_mode(target))
            recorder = _RecordingFile(fh)
            yield recorder  # type: ignore[misc]
            fh.flush()
            os.fsync(fh.fileno())
        digest = _announce_checksum(target, tmp_name) if checksum else None
        os.replace(tmp_name, target)
        if digest is not None:
            _write_sidecar(target, [digest])
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        cause = _storage_cause(exc, recorder)
        if cause is not None:
            raise storage_error(cause, target, existed=existed) from None
        raise
    finally:
        _ACTIVE.discard(tmp_name)
    _fsync_dir(target.parent)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, checksum: bool = False) -> None:
    """Atomically replace ``path`` with ``text`` (UTF-8; lone surrogates written back as their bytes)."""
    with atomic_open(path, "w", checksum=checksum) as fh:
        fh.write(text)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, checksum: bool = False) -> None:
    """Atomically replace ``path`` with ``data``."""
    with atomic_open(path, "wb", checksum=checksum) as fh:
        fh.write(data)


def atomic_write_with(path: str | os.PathLike[str], writer: Callable[[IO[bytes]], None], *,
                      checksum: bool = False) -> None:
    """Atomically replace ``path`` with whatever ``writer(binary_file)`` writes (e.g. torch.save, savefig)."""
    with atomic_open(path, "wb", checksum=checksum) as fh:
        writer(fh)


def atomic_copy(src: str | os.PathLike[str], dst: str | os.PathLike[str], *, checksum: bool = False) -> None:
    """Atomically replace ``dst`` with a copy of ``src`` (verified first, when ``src`` has a checksum)."""
    verify_checksum(src)
    with open(src, "rb") as source, atomic_open(dst, "wb", checksum=checksum) as fh:
        shutil.copyfileobj(source, fh, _CHUNK)


def replace_with_checksum(tmp: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """``os.replace(tmp, target)`` plus the SHA-256 sidecar, in the crash-safe order :func:`atomic_open` uses:
    for a file a library writes by path (an ONNX export), already complete and fsynced in ``tmp``."""
    target = Path(target)
    refuse_non_regular(target)
    digest = _announce_checksum(target, os.fspath(tmp))
    os.replace(tmp, target)
    _write_sidecar(target, [digest])


def checksum_file(path: str | os.PathLike[str]) -> Path:
    """The SHA-256 sidecar of ``path``: ``NAME.sha256`` beside it."""
    path = Path(path)
    return path.with_name(path.name + CHECKSUM_SUFFIX)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's bytes, as 64 hex digits (read in 1 MiB pieces)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_checksum(path: str | os.PathLike[str], *, remedy: str = "") -> bool:
    """Check ``path`` against its sidecar ``NAME.sha256`` before it is used.

    Returns True when it matches, False when there is no sidecar (a file written before plantpheno wrote
    checksums, or by hand): it is used unverified, and that is logged once per process at INFO level.

    Raises:
        IntegrityError: the file does not match (a flipped bit, a truncated copy, an edit) or its sidecar is
            unreadable; the message names the file, both digests and ``remedy`` (what the user can do instead).
    """
    path = Path(path)
    sidecar = checksum_file(path)
    if not sidecar.is_file():
        if str(path) not in _UNVERIFIED_NOTED:
            _UNVERIFIED_NOTED.add(str(path))
            log.info("%s has no checksum (%s): written before plantpheno recorded them, so it is used unverified",
                     path, sidecar.name)
        return False
    recorded = _read_sidecar(sidecar)
    if not recorded:
        raise IntegrityError(f"{sidecar} is not a SHA-256 checksum file (expected lines '<64 hex digits>  "
                             f"{path.name}'), so {path} cannot be verified; nothing was read from it. {remedy}".strip())
    actual = file_sha256(path)
    if actual not in recorded:
        raise IntegrityError(f"{path} is damaged: its SHA-256 is {actual[:16]}..., but {recorded[0][:16]}... was "
                             f"recorded when it was written ({sidecar.name}); it was not used and nothing was "
                             f"overwritten. {remedy}".strip())
    return True


def refuse_non_regular(path: str | os.PathLike[str], *, what: str = "") -> None:
    """Raise :class:`StorageError` when ``path`` exists and is not a regular file (nothing is changed): replacing
    a symbolic link would cut it (or, followed, write where the link points), a FIFO would block or be lost, a
    device node (``/dev/full``) would be replaced by a file, a folder cannot be."""
    target = Path(path)
    try:
        mode = os.lstat(target).st_mode
    except OSError:
        return  # not there (or not reachable): the write itself reports what is wrong
    if stat.S_ISREG(mode):
        return
    kind = ("a symbolic link" if stat.S_ISLNK(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a folder" if stat.S_ISDIR(mode) else "not a regular file")
    raise StorageError(f"cannot write {what or target}: {target} is {kind}, not a regular file; plantpheno only "
                       f"replaces regular files, so nothing was written (choose another path)")


def append_text(path: str | os.PathLike[str], text: str) -> None:
    """Append ``text`` to ``path`` (a log that grows by lines; not atomic: readers skip a torn last line).

    A failure for lack of space or permission raises :class:`StorageError`; the lines already there stay."""
    target = Path(path)
    try:
        with target.open("a", **TEXT_ENCODING) as fh:
            fh.write(text)
            fh.flush()
    except OSError as exc:
        if exc.errno not in STORAGE_ERRNOS:
            raise
        raise StorageError(f"cannot append to {target}: {_reason(exc)}{_free_space(target, exc)}; the lines already "
                           f"in {target.name} are kept") from None


def storage_error(exc: OSError, target: Path, *, existed: bool) -> StorageError:
    """The one message for a write that failed: what, where, why, and what is still safe."""
    safe = f"the previous {target.name} is unchanged" if existed else f"{target.name} was not written"
    culprit = Path(os.fsdecode(exc.filename)) if exc.filename else None
    if culprit is not None and exc.errno in (errno.EEXIST, errno.ENOTDIR) and culprit != target:
        why = f"{culprit} is a file, not a folder"
    else:
        why = _reason(exc)
        # name the path the system refused when it is not the file itself (a parent folder, say)
        if culprit is not None and culprit != target and culprit.parent != target.parent:
            why += f" ({culprit})"
    return StorageError(f"cannot write {target}: {why}{_free_space(target, exc)}; {safe}")


def remove_stale_temp_files(folder: str | os.PathLike[str], *, name: str | None = None,
                            everything: bool = False) -> list[Path]:
    """Delete temporary files that killed writers left in ``folder`` (of the file ``name``, or of any file).

    A temporary file is stale when the process that wrote it (same machine) is gone, or its PID now
    belongs to a process started after the file was last written. ``everything=True`` (for a caller that
    holds the folder's run lock, so no one else writes there) also deletes those of other machines and
    those written before temporary files named their writer. Returns the files deleted."""
    removed = []
    prefix = f".{name}." if name is not None else "."
    with os.scandir(folder) as entries:
        candidates = [Path(e.path) for e in entries if e.name.startswith(prefix) and e.name.endswith(".tmp")]
    for path in candidates:
        match = _TEMP.match(path.name)
        if match is not None:
            if name is not None and match["name"] != name:
                continue
            if match["host"] == _HOST:
                stale = not _writer_alive(int(match["pid"]), path)
            else:
                stale = everything
        else:
            legacy = _LEGACY_TEMP.match(path.name)
            stale = everything and legacy is not None and (name is None or legacy["name"] == name)
        if stale:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


def remove_stale_temp_files_under(root: str | os.PathLike[str]) -> list[Path]:
    """:func:`remove_stale_temp_files` with ``everything=True`` in ``root`` and every folder below it."""
    removed: list[Path] = []
    for folder, _, _ in os.walk(root):
        with contextlib.suppress(OSError):
            removed += remove_stale_temp_files(folder, everything=True)
    return removed


def check_output_path(path: str | os.PathLike[str], *, inputs: Iterable[str | os.PathLike[str]] = (),
                      what: str = "the output") -> None:
    """Refuse, before any work is done, an output path a user gave that must not be replaced: not a regular
    file (:func:`refuse_non_regular`), or the same file as one of ``inputs`` (an image being predicted, the
    model being exported), which the write would destroy.

    Raises:
        StorageError: naming ``what`` (e.g. ``--out``), the path and why; nothing is written.
    """
    target = Path(path)
    refuse_non_regular(target, what=f"{what} {target}")
    try:
        mine = os.stat(target)
    except OSError:
        return  # not there yet: it cannot be one of the inputs
    for source in inputs:
        with contextlib.suppress(OSError):
            theirs = os.stat(source)
            if (theirs.st_dev, theirs.st_ino) == (mine.st_dev, mine.st_ino):
                raise StorageError(f"cannot write {what} {target}: it is one of the inputs ({source}), which "
                                   f"writing would destroy; nothing was written (choose another path)")


def _read_sidecar(sidecar: Path) -> list[str]:
    """The digests a sidecar lists (lower-case hex); empty when it is not a checksum file."""
    try:
        text = sidecar.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    digests = [line.split()[0].lower() for line in text.splitlines() if line.strip()]
    return digests if digests and all(re.fullmatch(r"[0-9a-f]{64}", d) for d in digests) else []


def _write_sidecar(target: Path, digests: list[str]) -> None:
    atomic_write_text(checksum_file(target), "".join(f"{d}  {target.name}\n" for d in digests))


def _announce_checksum(target: Path, tmp_name: str) -> str:
    """Write the sidecar listing the new file's digest and the current file's, before the rename: whichever of the
    two a crash leaves at ``target``, the sidecar accepts it. Returns the new digest."""
    digest = file_sha256(tmp_name)
    current = _read_sidecar(checksum_file(target))[:1]
    if not current and target.is_file():  # a file written before checksums: its digest, read once
        current = [file_sha256(target)]
    _write_sidecar(target, [digest, *(d for d in current if d != digest)])
    return digest


class _RecordingFile:
    """The file object a writer gets: remembers an ``OSError`` from ``write``, because libraries that write
    through it (torch.save's zip writer) replace it with their own error ("unexpected pos ...")."""

    def __init__(self, fh: IO[Any]) -> None:
        self._fh = fh
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self._fh.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        try:
            self._fh.flush()
        except OSError as exc:
            self.error = exc
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)


def _storage_cause(exc: BaseException, recorder: _RecordingFile | None) -> OSError | None:
    if isinstance(exc, StorageError):
        return None
    if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
        return exc
    if recorder is not None and recorder.error is not None and recorder.error.errno in STORAGE_ERRNOS:
        return recorder.error
    return None


def _reason(exc: OSError) -> str:
    return _REASONS.get(exc.errno or 0, exc.strerror or type(exc).__name__)


def _free_space(target: Path, exc: OSError) -> str:
    """How much space is left, when the lack of it is the problem."""
    if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        return ""
    folder = target.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return ""
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if free < 1024 or unit == "TB":
            return f" ({free:.0f} {unit} free there)" if unit == "bytes" else f" ({free:.1f} {unit} free there)"
        free /= 1024
    return ""


def _writer_alive(pid: int, path: Path) -> bool:
    """Whether the process that wrote ``path`` (on this machine) may still be writing it."""
    if pid == os.getpid():
        return str(path) in _ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    except OSError:
        return True
    try:
        import psutil

        started = psutil.Process(pid).create_time()
        return started <= path.stat().st_mtime + 1.0  # a process started after the last write is a recycled PID
    except Exception:  # noqa: BLE001 - gone meanwhile, or no permission to look: keep the file
        return True


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
