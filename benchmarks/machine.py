"""The machine a benchmark ran on, recorded with every result: a figure without its machine cannot be compared.

    python benchmarks/machine.py          # prints this machine's record as JSON

:func:`machine` returns CPU model and ISA flags (AVX2, AVX-512, AMX, ...), torch's CPU kernel level, cores
(online, this process's affinity, the container's CPU quota), the load average when measured (other processes
on the same cores slow every figure), memory (total and the container's limit), Python, torch, oneDNN, MKL,
CUDA and cuDNN versions, torch's thread count, and each GPU's model and memory. :func:`describe` is the one-line
summary that the Markdown tables carry.
"""

from __future__ import annotations

import json
import os
import platform
import re
import time
from pathlib import Path
from typing import Any

# the ISA extensions that decide which CPU kernels torch and oneDNN run (as named in /proc/cpuinfo)
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
             "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve", "sve2")


def _cpuinfo() -> tuple[str | None, list[str]]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or None, []
    model = re.search(r"^(?:model name|Model|cpu model)\s*:\s*(.+)$", text, re.MULTILINE)
    flags = re.search(r"^(?:flags|Features)\s*:\s*(.+)$", text, re.MULTILINE)
    present = set(flags.group(1).split()) if flags else set()
    return (model.group(1).strip() if model else platform.processor() or None), [f for f in ISA_FLAGS if f in present]


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _cpu_quota() -> float | None:
    """CPUs allowed by the cgroup's quota (v2 ``cpu.max`` or v1 CFS), None when unlimited or unknown."""
    v2 = _read("/sys/fs/cgroup/cpu.max")
    if v2:
        quota, _, period = v2.partition(" ")
        return None if quota == "max" else int(quota) / int(period or 100000)
    quota, period = _read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), _read("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
    if quota and period and int(quota) > 0:
        return int(quota) / int(period)
    return None


def _memory() -> dict[str, float | None]:
    total = None
    meminfo = _read("/proc/meminfo") or ""
    found = re.search(r"^MemTotal:\s*(\d+) kB", meminfo, re.MULTILINE)
    if found:
        total = int(found.group(1)) / 2**20
    limit = _read("/sys/fs/cgroup/memory.max") or _read("/sys/fs/cgroup/memory/memory.limit_in_bytes")
    limit_gib = int(limit) / 2**30 if limit and limit.isdigit() and int(limit) < 2**60 else None
    return {"total_gib": round(total, 1) if total else None,
            "cgroup_limit_gib": round(limit_gib, 1) if limit_gib else None}


def _torch() -> dict[str, Any]:
    import torch

    config = torch.__config__.show()
    onednn = re.search(r"MKL-DNN v([\w.]+)", config) or re.search(r"oneDNN v([\w.]+)", config)
    mkl = re.search(r"Math Kernel Library Version ([\w.]+)", config)
    out: dict[str, Any] = {
        "torch": torch.__version__, "onednn": onednn.group(1) if onednn else None,
        "mkl": mkl.group(1) if mkl else None, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(), "cuda": torch.version.cuda, "cudnn": None, "gpus": []}
    if torch.cuda.is_available():
        out["cudnn"] = torch.backends.cudnn.version()
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            out["gpus"].append({"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                                "capability": f"{p.major}.{p.minor}", "multiprocessors": p.multi_processor_count})
    return out


def machine() -> dict[str, Any]:
    """This machine, as every benchmark result records it."""
    model, flags = _cpuinfo()
    try:
        affinity: int | None = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {"measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cpu_model": model, "isa_flags": flags,
            "cpus_online": os.cpu_count(), "cpus_affinity": affinity, "cpu_quota": _cpu_quota(),
            "load_average_1_5_15_min": load, "memory": _memory(), "python": platform.python_version(),
            "platform": platform.platform(), **_torch()}


def describe(info: dict[str, Any]) -> str:
    """One line for a results table: CPU (kernel level, cores, quota, load), memory, torch/oneDNN, GPU."""
    cores = f"{info['cpus_affinity'] or info['cpus_online']} cores"
    if info.get("cpu_quota"):
        cores += f" (quota {info['cpu_quota']:g})"
    isa = "/".join(f.upper() for f in info["isa_flags"] if f.startswith(("avx2", "avx512f", "amx_tile"))) or "no AVX2"
    load = info.get("load_average_1_5_15_min")
    gpus = ", ".join(g["name"] for g in info["gpus"]) or "no GPU"
    return (f"{info['cpu_model']} ({isa}; torch kernels {info['cpu_capability']}), {cores}, "
            f"load {load[0] if load else '?'} when started, {info['memory']['total_gib']} GiB; "
            f"torch {info['torch']} (oneDNN {info['onednn']}, {info['torch_threads']} threads); {gpus}")


if __name__ == "__main__":
    record = machine()
    print(json.dumps(record, indent=2))
    print(describe(record))


SHIPPED_RECIPE = Path(__file__).resolve().parent.parent / "src" / "plantpheno" / "recipes" / "classify.yaml"


def shipped_fine_tune_blocks() -> int:
    """How many blocks the shipped PlantVillage recipe fine-tunes (its ``training.fine_tune.blocks``): the cut the
    cache and fine-tune benchmarks measure unless told otherwise."""
    import yaml

    return int(yaml.safe_load(SHIPPED_RECIPE.read_text())["training"]["fine_tune"]["blocks"])
