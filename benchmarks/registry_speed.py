"""Benchmark: how long ``plantpheno models list / show / promote`` take, now and before (issue 18).

One tiny run is trained and registered 20 times (one model, 20 versions, aliases on two of them) in a project
folder's registry (``PROJECT/runs/mlflow.db``). Then each command runs as a new process, as a user types it,
alternately with this checkout's source and with the source of the commit before the change (``--baseline``,
default ``bb993b6``, extracted with ``git archive``), ``--repeats`` times each; the table gives the median wall
time and CPU time (user + system of the process) per command and the ratio old / new. Both read the same
registry, given with ``--registry`` (the old code's default was another file).

    .venv/bin/python benchmarks/registry_speed.py [--versions 20] [--repeats 5] [--baseline bb993b6]

Results go to ``benchmarks/results/registry_speed.{json,md}`` with the machine (CPU model and flags, cores,
torch version, GPU) and the load average before and after, since other processes share this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
ISA = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "neon", "asimd")


def machine() -> dict[str, Any]:
    import torch

    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu in ("", platform.machine(), platform.processor()):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith(("flags", "Features")):
                flags |= set(line.split(":", 1)[1].split())
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {"cpu": cpu, "isa": sorted(f for f in ISA if f in flags), "cores": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "torch": torch.__version__, "gpu": gpu, "python": platform.python_version(),
            "platform": platform.platform()}


def build_registry(project: Path, versions: int) -> str:
    """Train one tiny run in ``project`` and register it ``versions`` times in the project's registry."""
    from plantpheno import pipeline
    from plantpheno.config import validate_config
    from plantpheno.data.synth import synthesize_disease
    from plantpheno.registry.store import ModelRegistry, resolve_registry_uri

    os.chdir(project)
    root = synthesize_disease(project / "leaves", per_class=12, image_size=48, seed=0)
    config = validate_config({
        "output_dir": str(project / "runs"), "run_name": "run", "device": "cpu",
        "data": {"root": str(root), "image_size": 32, "batch_size": 8, "num_workers": 0},
        "model": {"backbone": "test_resnet"}, "training": {"epochs": 1, "progress_bar": False},
        "evaluation": {"bootstrap_samples": 100}, "tracking": {"system_metrics_interval": 0}})
    result = pipeline.train(config)
    uri = resolve_registry_uri()
    registry = ModelRegistry(uri)
    for i in range(versions):
        registry.register(result.run_dir, name="leafnet", alias="candidate" if i == versions - 1 else None)
    registry.promote("leafnet", 1, "champion")
    return uri


def baseline_source(commit: str, dst: Path) -> Path:
    data = subprocess.run(["git", "-C", str(REPO), "archive", commit, "src"], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(dst, filter="data")
    return dst / "src"


def timed(argv: list[str], *, src: Path, cwd: Path) -> tuple[float, float]:
    """Wall and CPU seconds of ``python -m plantpheno ARGV`` in a new process."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "plantpheno", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{argv} with {src} failed:\n{done.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--versions", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline", default="bb993b6", help="commit whose src/ is the old way")
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="plantpheno-registry-bench-") as tmp:
        project = Path(tmp) / "project"
        project.mkdir()
        uri = build_registry(project, args.versions)
        old_src, new_src = baseline_source(args.baseline, Path(tmp) / "old"), REPO / "src"
        commands = {"list": ["models", "list"], "show": ["models", "show", "leafnet@champion"],
                    "promote": ["models", "promote", "leafnet", "2", "--alias", "champion"]}
        samples: dict[str, dict[str, list[tuple[float, float]]]] = {c: {"old": [], "new": []} for c in commands}
        for _ in range(args.repeats):  # alternate old and new, so both see the same background load
            for name, argv in commands.items():
                for way, src in (("old", old_src), ("new", new_src)):
                    samples[name][way].append(timed([*argv, "--registry", uri], src=src, cwd=project))
        no_flag = [timed(["models", "list"], src=new_src, cwd=project) for _ in range(args.repeats)]
    rows = []
    for name, ways in samples.items():
        old_wall = statistics.median(w for w, _ in ways["old"])
        new_wall = statistics.median(w for w, _ in ways["new"])
        rows.append({"command": f"models {name}", "old_wall_s": round(old_wall, 2),
                     "old_cpu_s": round(statistics.median(c for _, c in ways["old"]), 2),
                     "new_wall_s": round(new_wall, 2),
                     "new_cpu_s": round(statistics.median(c for _, c in ways["new"]), 2),
                     "new_wall_max_s": round(max(w for w, _ in ways["new"]), 2),
                     "speedup_wall": round(old_wall / new_wall, 1)})
    rows.append({"command": "models list (no --registry, project folder)", "old_wall_s": None, "old_cpu_s": None,
                 "new_wall_s": round(statistics.median(w for w, _ in no_flag), 2),
                 "new_cpu_s": round(statistics.median(c for _, c in no_flag), 2),
                 "new_wall_max_s": round(max(w for w, _ in no_flag), 2), "speedup_wall": None})
    report = {"versions": args.versions, "repeats": args.repeats, "baseline": args.baseline, "rows": rows,
              "machine": machine(), "load_average_before": [round(x, 2) for x in load_before],
              "load_average_after": [round(x, 2) for x in os.getloadavg()],
              "note": "other agents' processes share this machine: compare the old and new columns, measured "
                      "alternately under the same load, more than the absolute seconds"}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "registry_speed.json").write_text(json.dumps(report, indent=2) + "\n")
    m = report["machine"]
    lines = [f"# Registry commands: {args.versions} versions, median of {args.repeats} runs each", "",
             f"Machine: {m['cpu']} ({', '.join(m['isa'])}), {m['cores']} cores ({m['usable_cores']} usable), "
             f"torch {m['torch']}, GPU {m['gpu']}; load average {report['load_average_before']} before, "
             f"{report['load_average_after']} after (shared with other processes).", "",
             "| command | old wall s | old CPU s | new wall s | new CPU s | new wall max s | old / new |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['command']} | {r['old_wall_s'] if r['old_wall_s'] is not None else '-'} | "
              f"{r['old_cpu_s'] if r['old_cpu_s'] is not None else '-'} | {r['new_wall_s']} | {r['new_cpu_s']} | "
              f"{r['new_wall_max_s']} | {r['speedup_wall'] if r['speedup_wall'] is not None else '-'}x |"
              .replace("| -x |", "| - |") for r in rows]
    text = "\n".join(lines) + "\n"
    (RESULTS / "registry_speed.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
