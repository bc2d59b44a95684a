"""Before/after a change, side by side: one benchmark script run alternately from an earlier commit and from this
working tree, in one invocation on one machine (recorded), so machine load hits both alike.

    python benchmarks/before_after.py --before cd1004f [--script trainer_overhead.py] [--rounds 3] [-- ARGS...]

The earlier commit is checked out into a temporary git worktree; each round runs ``python benchmarks/SCRIPT``
first in it and then here (each with its own ``src/`` first on ``PYTHONPATH``, the same interpreter), and the
Markdown table rows the script prints are kept. Every ``ratio`` column (the script's own figure against its own
baseline, e.g. the Trainer against a minimal loop) is summarised per side: median and range over the rounds.
Writes benchmarks/results/before_after_<script>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from machine import describe, machine  # benchmarks/ is not a package


def _rows(output: str) -> list[list[str]]:
    """The data rows of the Markdown tables in ``output`` (header and rule rows left out)."""
    rows = []
    for line in output.splitlines():
        if line.startswith("|") and not set(line) <= set("|-: "):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows.append(cells)
    return [r for r in rows if r and r != rows[0]] if rows else []


def _run(tree: Path, script: str, args: list[str]) -> tuple[list[list[str]], list[str]]:
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    results = tree / "benchmarks" / "results"
    kept = {p: p.read_bytes() for p in results.glob(f"{Path(script).stem}.*")}  # the script rewrites its own
    try:
        proc = subprocess.run([sys.executable, str(tree / "benchmarks" / script), *args], cwd=tree, env=env,
                              capture_output=True, text=True, timeout=3600)
    finally:
        for path, data in kept.items():
            path.write_bytes(data)
    if proc.returncode != 0:
        raise SystemExit(f"{script} failed in {tree} (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    text = proc.stdout
    header = next((line for line in text.splitlines() if line.startswith("|")), "")
    return _rows(text), [c.strip() for c in header.strip().strip("|").split("|")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the earlier commit (any git revision)")
    parser.add_argument("--script", default="trainer_overhead.py")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("args", nargs="*", help="arguments for the script (after --)")
    args = parser.parse_args()
    before_rev = subprocess.run(["git", "rev-parse", "--short", args.before], cwd=REPO, capture_output=True,
                                text=True, check=True).stdout.strip()
    after_rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                               check=True).stdout.strip()
    info = machine()
    results: dict[str, list[dict]] = {"before": [], "after": []}
    header: list[str] = []
    with tempfile.TemporaryDirectory(prefix="plantpheno-before-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), before_rev], cwd=REPO, check=True,
                       capture_output=True)
        try:
            for i in range(args.rounds):
                for side, where in (("before", tree), ("after", REPO)):
                    rows, header = _run(where, args.script, args.args)
                    results[side].append({"round": i + 1, "rows": rows})
                    print(f"round {i + 1} {side}: " + "; ".join(" | ".join(r) for r in rows), flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, capture_output=True)
    ratio_col = next((k for k, h in enumerate(header) if h.lower() == "ratio"), None)
    lines = [f"# Before/after: `{args.script}` at {before_rev} and at {after_rev} (this tree), alternated", "",
             f"`python benchmarks/before_after.py --before {args.before} --script {args.script} --rounds "
             f"{args.rounds}{' -- ' + ' '.join(args.args) if args.args else ''}`", "",
             f"Machine: {describe(info)}", "",
             "| side | row | " + " | ".join(f"round {i + 1}" for i in range(args.rounds)) + " | median |",
             "|---|---|" + "---|" * (args.rounds + 1)]
    summary: dict[str, dict[str, float]] = {}
    if ratio_col is not None:
        for side in ("before", "after"):
            names = [r[0] for r in results[side][0]["rows"]]
            for j, name in enumerate(names):
                values = [float(rnd["rows"][j][ratio_col].rstrip("x")) for rnd in results[side]]
                med = statistics.median(values)
                summary[f"{side}: {name}"] = med
                lines.append(f"| {side} ({before_rev if side == 'before' else after_rev}) | {name} | "
                             + " | ".join(f"{v:.3f}x" for v in values) + f" | {med:.3f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = HERE / "results" / f"before_after_{Path(args.script).stem}"
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps({"machine": info, "before": before_rev, "after": after_rev,
                                                    "script": args.script, "args": args.args, "header": header,
                                                    "rounds": results, "median_ratios": summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
