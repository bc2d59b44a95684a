"""Train and predict at a baseline commit and with this tree, alternated in one invocation: does a refactor cost
time?

    python benchmarks/refactor_speed.py [--baseline 5c54552] [--rounds 3] [--epochs 2] [--per-class 12]
                                        [--predict-images 100]

The baseline commit is checked out into a temporary git worktree. Each round runs, first at the baseline and then
here (each a fresh ``python -m plantpheno`` process with its own ``src/`` first on ``PYTHONPATH``, the same
interpreter): ``plantpheno train`` on a small synthetic disease dataset (timm's ``test_resnet``, 32 px, CPU, data
checks, report and trackers off), then ``plantpheno predict`` with the run just trained on ``--predict-images``
images. Both sides read the same images, drawn once before the first round. Wall and CPU time (user + system, from
the child's own resource usage) are those of the whole command, interpreter start and imports included: what a
user waits for. The figure is new/old per round and the median over rounds; whether the two sides' predictions
are identical (same seed, same data: a refactor should not change a number) is recorded too.
Writes benchmarks/results/refactor_speed.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from machine import describe, machine  # benchmarks/ is not a package; records the machine


def _timed(tree: Path, args: list[str], cwd: Path) -> dict[str, float]:
    """Run ``python -m plantpheno ARGS`` with ``tree``'s sources; its wall and CPU seconds."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "plantpheno", *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"plantpheno {' '.join(args)} failed in {tree} (exit {proc.returncode}):\n{stderr[-3000:]}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime}


def _config(work: Path, data: Path, epochs: int) -> Path:
    raw = {"seed": 0, "output_dir": str(work / "runs"), "device": "cpu",
           "data": {"root": str(data), "image_size": 32, "batch_size": 16, "num_workers": 0,
                    "checks": {"enabled": False}},
           "model": {"backbone": "test_resnet", "pretrained": False},
           "training": {"epochs": epochs, "learning_rate": 0.003, "progress_bar": False, "threads": 2},
           "evaluation": {"bootstrap_samples": 200, "report": False}, "tracking": {"backends": []}}
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _round(tree: Path, side: str, i: int, work: Path, config: Path, images: Path) -> dict[str, object]:
    name = f"{side}-{i}"
    train = _timed(tree, ["train", str(config), f"run_name={name}"], cwd=work)
    out = work / f"predictions-{name}.csv"
    predict = _timed(tree, ["predict", str(work / "runs" / "default" / name), str(images), "--out", str(out)],
                     cwd=work)
    return {"train": train, "predict": predict, "predictions": out.read_text()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="5c54552", help="the commit before the refactor (any git revision)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--per-class", type=int, default=12, help="training images per class (4 classes)")
    parser.add_argument("--predict-images", type=int, default=100)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "refactor_speed")
    args = parser.parse_args()

    def rev(name: str) -> str:
        return subprocess.run(["git", "rev-parse", "--short", name], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()

    baseline, current = rev(args.baseline), rev("HEAD")
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "src"], cwd=REPO, capture_output=True, text=True,
                                check=True).stdout.strip())
    info = machine()
    rounds: dict[str, list[dict]] = {"old": [], "new": []}
    with tempfile.TemporaryDirectory(prefix="plantpheno-refactor-") as tmp:
        work = Path(tmp)
        old_tree = work / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(old_tree), baseline], cwd=REPO, check=True,
                       capture_output=True)
        try:
            sys.path.insert(0, str(REPO / "src"))
            from plantpheno.data.synth import synthesize_disease

            data = synthesize_disease(work / "leaves", per_class=args.per_class, image_size=48, seed=0)
            pool = synthesize_disease(work / "pool", per_class=-(-args.predict_images // 4), image_size=48, seed=1)
            images = work / "predict"
            images.mkdir()
            for path in sorted(pool.rglob("*.jpg"))[:args.predict_images]:
                shutil.copyfile(path, images / f"{path.parent.name}_{path.name}")
            config = _config(work, data, args.epochs)
            for i in range(args.rounds):
                for side, tree in (("old", old_tree), ("new", REPO)):
                    result = _round(tree, side, i + 1, work, config, images)
                    rounds[side].append(result)
                    print(f"round {i + 1} {side}: train {result['train']['wall_s']:.1f} s wall "
                          f"{result['train']['cpu_s']:.1f} s CPU; predict {result['predict']['wall_s']:.1f} s wall "
                          f"{result['predict']['cpu_s']:.1f} s CPU", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old_tree)], cwd=REPO, capture_output=True)
    summary = {}
    for step in ("train", "predict"):
        for measure in ("wall_s", "cpu_s"):
            ratios = [new[step][measure] / old[step][measure] for old, new in zip(rounds["old"], rounds["new"])]
            summary[f"{step} {measure[:-2]}"] = {"ratios": ratios, "median": statistics.median(ratios),
                                                 "old_median_s": statistics.median(r[step][measure]
                                                                                   for r in rounds["old"]),
                                                 "new_median_s": statistics.median(r[step][measure]
                                                                                   for r in rounds["new"])}
    identical = all(o["predictions"] == n["predictions"] for o, n in zip(rounds["old"], rounds["new"]))
    command = (f"python benchmarks/refactor_speed.py --baseline {args.baseline} --rounds {args.rounds} --epochs "
               f"{args.epochs} --per-class {args.per_class} --predict-images {args.predict_images}")
    lines = [f"# Refactor speed: {baseline} (old) against {current}{' + uncommitted changes' if dirty else ''} (new)",
             "", f"`{command}`", "", f"Machine: {describe(info)}", "",
             f"Train: {4 * args.per_class} synthetic images (48 px, read at 32 px), test_resnet, {args.epochs} epochs "
             f"on the CPU; predict: {args.predict_images} images with the run just trained. Whole commands "
             f"(interpreter start and imports included), old and new alternated, {args.rounds} rounds.", "",
             "| step | old median (s) | new median (s) | new/old per round | median new/old |", "|---|---|---|---|---|"]
    for name, row in summary.items():
        lines.append(f"| {name} | {row['old_median_s']:.2f} | {row['new_median_s']:.2f} | "
                     + ", ".join(f"{r:.3f}" for r in row["ratios"]) + f" | {row['median']:.3f}x |")
    lines += ["", f"Predictions of the two sides identical in every round: {'yes' if identical else 'NO'}.", "",
              "Measured on a machine shared with other developers' jobs (see the load): wall seconds move with their "
              "load; CPU seconds are the commands' own. Read a ratio within a few percent of 1 as no change."]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text)
    for side in rounds.values():
        for r in side:
            r.pop("predictions")
    args.out.with_suffix(".json").write_text(json.dumps(
        {"machine": info, "command": command, "baseline": baseline, "current": current, "uncommitted": dirty,
         "rounds": rounds, "ratios_new_over_old": summary, "predictions_identical": identical}, indent=2) + "\n")


if __name__ == "__main__":
    main()
