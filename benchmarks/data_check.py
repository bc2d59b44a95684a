"""Seconds for the data checks on the PlantVillage subset, next to the image check alone, in one run; and the
recall of the label-error check on labels flipped on purpose.

Steps, each timed (wall and CPU seconds of this process; on a shared machine the CPU seconds are the steadier
figure):

1. ``image check alone``: every image read, hashed and decoded, as before the data checks existed;
2. ``image check + measures``: the same pass computing the pixel measures the checks need;
3. ``prepare_data, cold memo``: what ``train`` pays before the checks on a new data set (2. + memo + split);
4. ``pixel and label checks``: duplicates, labels, quality, background shortcut (199 permutations), from 3.;
5. ``warm start``: ``prepare_data`` + all of 4. again, as a new ``plantpheno train`` pays it (image memo warm);
6. ``again``: the same once more, as a second run with the same data and settings pays it (report memoised);
7. with ``--label-errors``: the frozen EfficientNet-Lite0 features of every image (cold), and the label-error and
   feature-duplicate checks on them; then recall@k: k labels flipped at random (to another class) among the
   images, the check run on the cached features, and the share of the k flipped images among the k it ranks
   most suspicious (3 seeds per rate).

    python benchmarks/data_check.py [--data ../shared/data/plantvillage-subset] [--label-errors]

Writes benchmarks/results/data_check.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"


def machine() -> dict[str, object]:
    import torch

    from plantpheno.device import usable_cores

    cpu, flags = platform.processor() or platform.machine(), []
    try:
        info = Path("/proc/cpuinfo").read_text()
        cpu = next(line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name"))
        flag_line = next(line for line in info.splitlines() if line.startswith("flags")).split(":", 1)[1].split()
        flags = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in flag_line]
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "isa": flags, "cores": os.cpu_count(), "usable_cores": usable_cores(),
            "torch": torch.__version__, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version(), "load_average": os.getloadavg()}


@contextmanager
def timed(results: dict[str, dict[str, float]], name: str):
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    results[name] = {"wall_s": round(time.perf_counter() - wall, 2), "cpu_s": round(time.process_time() - cpu, 2)}
    print(f"{name:<32} {results[name]['wall_s']:>8.2f} s wall {results[name]['cpu_s']:>8.2f} s CPU", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" /
                        "plantvillage-subset")
    parser.add_argument("--label-errors", action="store_true", help="also time the frozen-feature checks and "
                        "measure recall@k on flipped labels (computes Lite0 features of every image)")
    parser.add_argument("--flip-rates", type=float, nargs="*", default=[0.02, 0.05])
    parser.add_argument("--feature-memo", type=Path, default=None, help="a features-*.npz from an earlier check "
                        "(OUTPUT_DIR/.cache/checks/) to start from: the features step is then timed warm")
    parser.add_argument("--out", type=Path, default=RESULTS / "data_check")
    args = parser.parse_args()
    from plantpheno.config import validate_config
    from plantpheno.data import images
    from plantpheno.data.cache import CACHE_DIR
    from plantpheno.data.prepared import prepare_data
    from plantpheno.data.doctor.check import check_data
    from plantpheno.data.images import check_images
    from plantpheno.data.sources import read_folder
    from plantpheno.data.doctor.runner import run_data_checks
    from plantpheno.training.doctor_features import frozen_features

    meta = {"machine": machine(), "data": str(args.data)}
    results: dict[str, dict[str, float]] = {}
    paths = [s.path for s in read_folder(args.data, extensions=(".jpg", ".jpeg", ".png"))]
    meta["images"] = len(paths)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        config = validate_config({"data": {"root": str(args.data), "num_workers": 0}, "output_dir": str(out),
                                  "device": "cpu"})
        measure = images.image_stats
        images.image_stats = lambda rgb: None  # the image check as it was: decode and hash, no measures
        try:
            with timed(results, "image check alone"):
                check_images(paths)
        finally:
            images.image_stats = measure
        with timed(results, "image check + measures"):
            check_images(paths)  # the same pass, now measuring the pixels for the data checks
        with timed(results, "prepare_data, cold memo"):
            prepared = prepare_data(config)  # what train pays first: check + measures, memo written, split
        with timed(results, "pixel and label checks"):
            report = check_data(prepared, config.data, seed=config.seed)
        extract = frozen_features(device=config.device, num_workers=config.data.num_workers)
        with timed(results, "warm start (prepare + checks)"):
            report = run_data_checks(prepare_data(config), config.data, seed=config.seed, output_dir=out,
                                     extract=extract)
        with timed(results, "again (report memoised)"):
            run_data_checks(prepare_data(config), config.data, seed=config.seed, output_dir=out, extract=extract)
        meta["findings"] = [f.line() for f in report.findings]
        meta["check_seconds"] = report.seconds
        if args.label_errors:
            on = config.model_copy(update={"data": config.data.model_copy(update={"checks": config.data.checks.model_copy(
                update={"label_errors": "on"})})})
            if args.feature_memo is not None:
                import shutil

                (out / CACHE_DIR / "checks").mkdir(parents=True, exist_ok=True)
                shutil.copyfile(args.feature_memo, out / CACHE_DIR / "checks" / args.feature_memo.name)
            with timed(results, "frozen features (" + ("cached" if args.feature_memo else "cold") + ")"):
                from plantpheno.reporting import LoggingReporter
                from plantpheno.data.doctor.runner import check_features

                extract = frozen_features(device=on.device, num_workers=on.data.num_workers)
                features, _ = check_features(prepared, on.data.checks, cache_dir=out / CACHE_DIR, extract=extract,
                                             reporter=LoggingReporter())
            with timed(results, "label errors + feature dups"):
                full = check_data(prepared, on.data, seed=on.seed, features=features)
            meta["findings_with_features"] = [f.line() for f in full.findings]
            meta["recall"] = recall_at_k(prepared, on, features, args.flip_rates)
    meta["results"] = results
    meta["note"] = ("Measured on a machine shared with other developers' jobs (see load_average): wall seconds "
                    "move with their load; CPU seconds are this process's own.")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(meta, indent=1, default=str) + "\n")
    args.out.with_suffix(".md").write_text(markdown(meta))
    print(markdown(meta))


def recall_at_k(prepared, config, features, rates: list[float]) -> list[dict[str, float]]:
    """Flip k labels at random (each to another class), rank with the label-error check on the cached features,
    and count the flipped images among the k most suspicious."""
    from dataclasses import replace

    from plantpheno.data.doctor.check import check_data

    names = prepared.class_names
    rows = []
    for rate in rates:
        for seed in range(3):
            rng = np.random.default_rng(seed)
            samples = [(split, s) for split, items in prepared.splits.items() for s in items]
            k = round(rate * len(samples))
            flipped = set(rng.choice(len(samples), k, replace=False).tolist())
            splits: dict[str, list] = {name: [] for name in prepared.splits}
            for i, (split, s) in enumerate(samples):
                if i in flipped:
                    others = [n for n in names if n != s.target]
                    s = replace(s, target=others[int(rng.integers(len(others)))])
                splits[split].append(s)
            noisy = replace(prepared, splits=splits)
            report = check_data(noisy, config.data, seed=config.seed, features=features)
            finding = next((f for f in report.findings if f.check == "label_errors"), None)
            ranked = [g[0] for g in finding.files] if finding else []
            truth = {str(samples[i][1].path) for i in flipped}
            hits = len(set(ranked[:k]) & truth)
            rows.append({"rate": rate, "seed": seed, "k": k, "flagged": len(ranked), "recall_at_k": hits / k,
                         "recall_all_flagged": len(set(ranked) & truth) / k,
                         "precision_all_flagged": len(set(ranked) & truth) / max(1, len(ranked))})
            print(rows[-1], flush=True)
    return rows


def markdown(meta: dict) -> str:
    m = meta["machine"]
    lines = [f"# Data checks on {meta['images']} images ({meta['data']})", "",
             (f"Machine: {m['cpu']} ({', '.join(m['isa'])}), {m['cores']} cores ({m['usable_cores']} usable), "
              f"torch {m['torch']}, GPU {m['gpu']}, Python {m['python']}; load average at start "
              f"{', '.join(f'{x:.1f}' for x in m['load_average'])}. {meta['note']}"), "",
             "| step | wall s | CPU s |", "|---|---:|---:|"]
    lines += [f"| {name} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} |" for name, r in meta["results"].items()]
    lines += ["", "Per check (s): " + ", ".join(f"{k} {v:.2f}" for k, v in meta["check_seconds"].items()), "",
              "Findings:", *[f"- {line}" for line in meta["findings"]]]
    if "recall" in meta:
        lines += ["", "Label errors: recall among the k most suspicious, k labels flipped at random", "",
                  "| flipped | k | seed | flagged | recall@k | recall (all flagged) | precision (all flagged) |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['rate']:.0%} | {r['k']} | {r['seed']} | {r['flagged']} | {r['recall_at_k']:.2f} | "
                  f"{r['recall_all_flagged']:.2f} | {r['precision_all_flagged']:.2f} |" for r in meta["recall"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
