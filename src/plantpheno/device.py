"""Choosing the device, precision and determinism settings, and the host's threads and memory."""

from __future__ import annotations

import ctypes
import functools
import math
import os
import platform
import random
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from plantpheno.errors import ConfigError, short_repr


def resolve_device(setting: str) -> torch.device:
    """``auto``: CUDA if available, then Apple MPS, then CPU. An unavailable explicit choice is an error, and so
    is anything else (named, with what was expected)."""
    if not isinstance(setting, str) or not re.fullmatch(r"auto|cpu|mps|cuda(:[0-9]{1,3})?", setting, re.ASCII):
        raise ConfigError(f"device: got {short_repr(setting)}; expected auto, cpu, cuda, cuda:N or mps")
    if setting == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if setting.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device: got {setting!r} but CUDA is not available here; use device=cpu or auto")
        index = int(setting.split(":")[1]) if ":" in setting else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device: got {setting!r} but only {torch.cuda.device_count()} CUDA device(s) exist")
    if setting == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device: got 'mps' but Apple MPS is not available here; use device=cpu or auto")
    return torch.device(setting)


def amp_dtype(choice: str, device: torch.device) -> torch.dtype | None:
    """Mixed precision (``training.mixed_precision``: auto, off, bf16, fp16) only on CUDA: bf16 where supported,
    else fp16 (which needs a grad scaler)."""
    if device.type != "cuda" or choice == "off":
        return None
    if choice == "fp16" or (choice == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


def seed_everything(seed: int, *, deterministic: bool) -> None:
    """Seed Python, NumPy and torch; optionally force deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def usable_cores() -> int:
    """CPU cores this process may use: its CPU affinity, capped by a container's CPU quota (cgroup v2
    ``cpu.max`` or v1 ``cpu.cfs_quota_us``), which neither ``os.cpu_count`` nor torch's default honours."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


def _cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by the cgroup's quota, or None when unlimited or unknown."""
    try:
        text = (root / "cpu.max").read_text().split()
        if text and text[0] != "max":
            return int(text[0]) / int(text[1])
        return None
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def set_threads(setting: int | str, *, processes_per_machine: int = 1) -> int:
    """Set torch's intra-op thread count and return it.

    ``auto``: the usable cores (:func:`usable_cores`) shared evenly among this machine's training processes
    (torchrun's local world), at least one each. torch's own default honours CPU affinity but not a
    container's CPU quota (64 threads in a 2-CPU container on a 64-core host), and torchrun sets one
    thread per process, which leaves cores idle.
    """
    threads = setting if isinstance(setting, int) else max(1, usable_cores() // max(1, processes_per_machine))
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    return threads


# Steps between the trainer's reads of the loss on a GPU (``training.check_every: auto``). Each read waits for the
# device to finish every queued kernel; in between, the host queues the next steps while the GPU runs. At 32 the
# GPU waits for the host once per 32 steps (ResNet-50 at 224 px in bf16: about 0.8 s of GPU work between reads);
# a NaN is still reported with the epoch and batch where it appeared.
GPU_CHECK_EVERY = 32


def check_every(setting: int | str, device: torch.device) -> int:
    """Resolve ``training.check_every``: a number as given; auto = every step on the CPU (where reading a value
    back costs nothing: its operations have already run), :data:`GPU_CHECK_EVERY` steps on CUDA and MPS."""
    if isinstance(setting, int):
        return setting
    return 1 if device.type == "cpu" else GPU_CHECK_EVERY


@functools.cache
def glibc() -> ctypes.CDLL | None:
    """This process's C library when it is glibc (whose malloc tuning calls plantpheno uses), else None."""
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library is another (macOS, Windows, musl)."""
    libc = glibc()
    if libc is None:
        return None
    trim = libc.malloc_trim
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_freed_memory() -> bool:
    """Hand the memory this process has freed back to the operating system; False where that cannot be done.

    glibc keeps freed heap memory for reuse, so a process that once held many large temporaries (decoded photos,
    batches, activations) keeps their pages resident after freeing them. ``malloc_trim(0)`` returns every free page
    of every heap, in about 60 ms per GiB it gives back (measured on a 2-core Xeon). The trainer calls it before its
    loader workers are forked (so they do not inherit the pages the data preparation freed, such as decoded photos)
    and at each epoch's end (``training.release_memory``).
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
