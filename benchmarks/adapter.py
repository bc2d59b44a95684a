"""The first-layer adapter (``model.input_adapter``): a pretrained RGB backbone on four bands, each adapter.

    python benchmarks/adapter.py [--per-class 200] [--size 64] [--seeds 0] [--head-epochs 60]
                                 [--fine-tune-epochs 6] [--fine-tune-blocks 2] [--fine-tune-lr 0.0005] [--batch-size 16]

Invocations with the same settings add their seeds to the results (one or two seeds per invocation keeps each
under ~15 minutes on 2 loaded cores).

The bundled ImageNet EfficientNet-Lite0 (``model.pretrained=bundled``, offline) on the synthetic four-band set of
``plantpheno data synth --kind multispectral`` (red, green, blue, NIR; the stress shows only in NIR), ``data.bands =
[red, green, blue, nir]``; 200 leaves per class give 280 training, 60 validation and 60 test images a seed. For each
seed, the adapters with that same seed (same split, same head initialisation, same batches), so every comparison is
paired:

* start: the adapted network as it is built, before any of its weights move: its pooled features (eval mode,
  BatchNorm with its ImageNet statistics, no augmentation) of the training images, a logistic regression fitted on
  them (scikit-learn, standardised features, L2 strength by 5-fold cross-validation on train), and that probe's loss
  and accuracy on the validation images. The probe stands for the head: timm initialises an EfficientNet's
  classifier uniformly in +-1/sqrt(classes), which on two classes gives logits of about +-15 and a first validation
  loss of 10-13 whatever the adapter, so the starting loss of the model with a fresh head measures the head, not
  the features the adapter gives.
* trained: the ``classify`` recipe as shipped (``src/plantpheno/recipes/classify.yaml``), which a user with bands
  runs: the head on the frozen adapted network's cached features (``--head-epochs`` 60 at lr 0.01, weight decay
  0.05), then from the best head a fine-tune of the last ``--fine-tune-blocks`` (2) backbone groups for
  ``--fine-tune-epochs`` (6) at ``--fine-tune-lr`` (5e-4) on cached activations (BatchNorm statistics fixed). The
  first layer keeps its adapted weights: the trained figures measure the adapted layer as the recipe keeps it. The
  best epoch of both phases by validation macro-F1, then the run's own evaluation of it on validation and on test.
  (Two other protocols: end to end from a fresh head at 1e-3 in batches of 8 left every adapter near chance,
  validation losses 3-6, test accuracy 48-65 %; every group fine-tuned, ``--fine-tune-blocks 8``, first layer
  included, ran at 4 images/s on 2 loaded cores and its first epoch at lr rising to 5e-4 took random's validation
  accuracy from 83 % to 57 %: too slow to train long enough here.)

Paired bootstraps over (seed, image) pairs give the intervals: each adapter's start probe loss minus random's (per
validation image), its trained validation accuracy minus tile's (per validation image), and its test accuracy minus
tile's and random's (per test image).

The default is chosen by this rule, fixed before the run, on validation figures only (:func:`verdict`): a candidate
(``mean``, ``nearest``; the name-matched adapters, as the issue asks bands to be matched by name) qualifies when
(1) its start probe's validation loss minus random's has a paired 95 % interval wholly below 0, and (2) its trained
validation accuracy minus tile's has a paired 95 % interval whose lower end is at or above -5 points (no worse than
tiling, within a 5-point margin). If one qualifies, it is the default; if both, the one with the lower mean start
probe loss; if neither, the default stays ``mean`` and the claim is not shown. Test figures are reported, never used
to choose. Writes benchmarks/results/adapter.{json,md} with the machine.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, machine  # noqa: E402

OUT = Path(__file__).parent / "results"
RGBN = ["red", "green", "blue", "nir"]
ADAPTERS = ("nearest", "mean", "tile", "random")


def run_one(data: Path, out: Path, *, adapter: str, seed: int, size: int, args: argparse.Namespace) -> dict[str, Any]:
    """The trained arm: the classify recipe's two phases, every layer in the fine-tune (see the module's docstring)."""
    from plantpheno.config import validate_config
    from plantpheno.pipeline import evaluate_run, train
    from plantpheno.reporting import RecordingReporter
    from plantpheno.run.epochlog import read_epoch_log
    from plantpheno.run.folder import RunDir

    name = f"trained-{adapter}-{seed}"
    raw: dict[str, Any] = {
        "seed": seed, "output_dir": str(out), "run_name": name, "device": "cpu",
        "data": {"root": str(data), "bands": RGBN, "image_size": size, "batch_size": args.batch_size,
                 "num_workers": 0, "checks": {"enabled": False}, "augment": {"enabled": False}},
        "model": {"backbone": "tf_efficientnet_lite0", "pretrained": "bundled", "input_adapter": adapter,
                  "freeze_backbone": True},
        "training": {"epochs": args.head_epochs, "learning_rate": 0.01, "weight_decay": 0.05, "feature_cache": True,
                     "progress_bar": False,
                     "fine_tune": {"epochs": args.fine_tune_epochs, "blocks": args.fine_tune_blocks,
                                   "learning_rate": args.fine_tune_lr, "warmup_epochs": args.warmup}},
        "evaluation": {"report": False, "bootstrap_samples": 1000},
        "tracking": {"backends": []},
    }
    start = time.perf_counter()
    result = train(validate_config(raw), reporter=RecordingReporter(), handle_signals=False)
    val = evaluate_run(result.run_dir, split="val", reporter=RecordingReporter())
    wall = time.perf_counter() - start
    run = RunDir.of(result.run_dir)
    history = read_epoch_log(run.metrics_log).records
    best = next(r for r in history if r["epoch"] == result.state.best_epoch)
    m = result.metrics

    def correct(split: str) -> list[int]:
        with open(run.eval(split).predictions, newline="") as f:
            return [int(r["label"] == r["predicted"]) for r in csv.DictReader(f)]

    return {"name": name, "adapter": adapter, "seed": seed, "frozen_backbone": False,
            "val_loss_per_epoch": [round(float(r["val/loss"]), 4) for r in history],
            "best_epoch": result.state.best_epoch, "best_phase": best.get("phase", "train"),
            "val_loss": float(best["val/loss"]), "val_accuracy": val["accuracy"],
            "val_accuracy_wilson95": wilson(val["accuracy"], val["num_samples"]), "val_images": val["num_samples"],
            "val_correct": correct("val"), "test_accuracy": m["accuracy"],
            "test_ci95": [m["confidence_interval"]["low"], m["confidence_interval"]["high"]],
            "test_loss": m["calibration"]["before"]["nll"], "test_images": m["num_samples"],
            "test_correct": correct("test"), "wall_s": round(wall, 1)}


def probe(data: Path, out: Path, *, adapter: str, seed: int, size: int) -> dict[str, Any]:
    """The start measurement: a logistic-regression probe on the adapted, untrained network's pooled features."""
    import torch
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.metrics import log_loss
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from plantpheno.config import validate_config
    from plantpheno.pipeline import _setup
    from plantpheno.reporting import RecordingReporter

    raw = {"seed": seed, "output_dir": str(out), "device": "cpu",
           # one batch larger than the split: the training loader drops no incomplete last batch
           "data": {"root": str(data), "bands": RGBN, "image_size": size, "batch_size": 512, "num_workers": 0,
                    "checks": {"enabled": False}, "augment": {"enabled": False}},
           "model": {"backbone": "tf_efficientnet_lite0", "pretrained": "bundled", "input_adapter": adapter},
           "tracking": {"backends": []}}
    start = time.perf_counter()
    from plantpheno.device import seed_everything

    seed_everything(seed, deterministic=False)
    job = _setup(validate_config(raw), manifest=None, load_pretrained=True, reporter=RecordingReporter(),
                 splits=("train", "val"))
    model = job.model.eval()
    feats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    with torch.no_grad():
        for split in ("train", "val"):
            xs, ys = [], []
            for images, target in job.loaders[split]:
                xs.append(model.forward_head(model.forward_features(images), pre_logits=True).numpy())
                ys.append(target.numpy())
            feats[split] = np.concatenate(xs), np.concatenate(ys)
    # regularisation chosen by 5-fold cross-validation on train: an unregularised probe separates 84 images in 1,280
    # features perfectly and its validation loss measures its overconfidence more than the features
    clf = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=np.logspace(-4, 2, 7), cv=5, max_iter=5000,
                                                               scoring="neg_log_loss")).fit(*feats["train"])
    xv, yv = feats["val"]
    p = clf.predict_proba(xv)
    accuracy = float((p.argmax(1) == yv).mean())
    return {"name": f"start-{adapter}-{seed}", "adapter": adapter, "seed": seed, "frozen_backbone": True,
            "val_loss": float(log_loss(yv, p, labels=[0, 1])), "val_accuracy": accuracy,
            "val_losses": [round(float(-np.log(max(p[i, y], 1e-15))), 5) for i, y in enumerate(yv)],
            "val_accuracy_wilson95": wilson(accuracy, len(yv)), "val_images": int(len(yv)),
            "train_images": int(len(feats["train"][1])), "adapter_message": getattr(model, "plantpheno_input_adapter",
                                                                                    None),
            "wall_s": round(time.perf_counter() - start, 1)}


def wilson(p: float, n: int, z: float = 1.96) -> list[float]:
    """The Wilson score interval of a proportion ``p`` of ``n``."""
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(centre - half, 4), round(centre + half, 4)]


def paired_difference(rows: list[dict[str, Any]], adapter: str, base: str, *, key: str,
                      resamples: int = 10000) -> dict[str, float] | None:
    """``adapter``'s per-image ``key`` (``test_correct`` of the trained rows, ``val_losses`` of the start probes) minus
    ``base``'s, over the (seed, image) pairs of the seeds both have, with a 95 % paired bootstrap interval."""
    frozen = key == "val_losses"
    have = {(r["adapter"], r["seed"]): r for r in rows if r["frozen_backbone"] == frozen and key in r}
    seeds = sorted({s for a, s in have if a == base} & {s for a, s in have if a == adapter})
    if adapter == base or not seeds:
        return None
    diff = np.concatenate([np.array(have[(adapter, s)][key]) - np.array(have[(base, s)][key])
                           for s in seeds]).astype(float)
    rng = np.random.default_rng(0)
    means = diff[rng.integers(0, len(diff), (resamples, len(diff)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"estimate": float(diff.mean()), "low": float(low), "high": float(high), "pairs": int(len(diff))}


def summary(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| adapter | start: probe's val loss (per seed) | start: minus random's (paired 95 % CI) | trained: val "
             "accuracy (per seed) | val accuracy minus tile's (paired 95 % CI) | test accuracy (per seed) | test "
             "accuracy minus tile's (paired 95 % CI) | minus random's | best epoch's phase |",
             "|---|---|---|---|---|---|---|---|---|"]
    for adapter in ADAPTERS:
        start = [r for r in rows if r["adapter"] == adapter and r["frozen_backbone"]]
        done = [r for r in rows if r["adapter"] == adapter and not r["frozen_backbone"]]
        if not start and not done:
            continue

        def avg(key: str, of: list[dict[str, Any]], percent: bool = False) -> str:
            values = [r[key] for r in of]
            f = (lambda v: f"{v:.1%}") if percent else (lambda v: f"{v:.3f}")  # noqa: E731
            return f"{f(float(np.mean(values)))} ({', '.join(f(v) for v in values)})" if values else "-"

        def paired(base: str, key: str, percent: bool) -> str:
            d = paired_difference(rows, adapter, base, key=key)
            if d is None:
                return "-"
            f = (lambda v: f"{100 * v:+.1f}") if percent else (lambda v: f"{v:+.3f}")  # noqa: E731
            unit = " points" if percent else ""
            return f"{f(d['estimate'])}{unit} ({f(d['low'])} to {f(d['high'])}; {d['pairs']} pairs)"

        phases = ", ".join(str(r.get("best_phase", "-")) for r in done) or "-"
        lines.append(f"| {adapter} | {avg('val_loss', start)} | {paired('random', 'val_losses', False)} | "
                     f"{avg('val_accuracy', done, True)} | {paired('tile', 'val_correct', True)} | "
                     f"{avg('test_accuracy', done, True)} | {paired('tile', 'test_correct', True)} | "
                     f"{paired('random', 'test_correct', True)} | {phases} |")
    return lines


MARGIN = 0.05  # "no worse than tiling": the paired interval's lower end at or above -5 points (set before the run)


def verdict(rows: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """The default by the rule of the module's docstring (validation figures only) and one line per candidate."""
    said, qualified = [], {}
    for adapter in ("mean", "nearest"):
        start = paired_difference(rows, adapter, "random", key="val_losses")
        trained = paired_difference(rows, adapter, "tile", key="val_correct")
        if start is None or trained is None:
            said.append(f"{adapter}: not measured (start or trained arm missing)")
            continue
        ok_start, ok_trained = start["high"] < 0, trained["low"] >= -MARGIN
        said.append(f"{adapter}: start minus random {start['estimate']:+.3f} ({start['low']:+.3f} to "
                    f"{start['high']:+.3f}): {'better beyond the interval' if ok_start else 'not shown better'}; "
                    f"trained val accuracy minus tile {100 * trained['estimate']:+.1f} points "
                    f"({100 * trained['low']:+.1f} to {100 * trained['high']:+.1f}): "
                    f"{'no worse within 5 points' if ok_trained else 'not shown no worse'}")
        if ok_start and ok_trained:
            qualified[adapter] = float(np.mean([r["val_loss"] for r in rows
                                                if r["adapter"] == adapter and r["frozen_backbone"]]))
    choice = min(qualified, key=qualified.__getitem__) if qualified else "mean"
    said.append(f"default: {choice} ({'meets' if qualified else 'no candidate meets'} the rule)")
    return choice, said


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--head-epochs", type=int, default=60, help="head epochs on cached features (lr 0.01)")
    parser.add_argument("--fine-tune-epochs", type=int, default=6)
    parser.add_argument("--fine-tune-lr", type=float, default=5e-4)
    parser.add_argument("--fine-tune-blocks", type=int, default=2, help="8: all of Lite0's, the first layer too")
    parser.add_argument("--warmup", type=float, default=0.0, help="fine-tune warmup epochs")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--adapters", nargs="+", default=list(ADAPTERS), choices=ADAPTERS)
    parser.add_argument("--train-adapters", nargs="*", choices=ADAPTERS, default=None,
                        help="the adapters also trained end to end (default: all of --adapters); the others' trained "
                             "rows of an earlier invocation with the same settings are kept")
    args = parser.parse_args()
    from plantpheno.data.synth_bands import synthesize_multispectral

    info = machine()
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        data = synthesize_multispectral(Path(tmp) / "set", per_class=args.per_class, image_size=max(args.size, 32),
                                        seed=0)
        for seed in args.seeds:
            for adapter in args.adapters:
                rows.append(probe(data, Path(tmp) / "probe", adapter=adapter, seed=seed, size=args.size))
                print(json.dumps(rows[-1]), flush=True)
                if args.train_adapters is not None and adapter not in args.train_adapters:
                    continue
                rows.append(run_one(data, Path(tmp) / "runs", adapter=adapter, seed=seed, size=args.size, args=args))
                print(json.dumps({k: v for k, v in rows[-1].items() if not k.endswith("_correct")}), flush=True)
    OUT.mkdir(exist_ok=True)
    wall = round(time.perf_counter() - started, 1)
    # rows of earlier invocations (other seeds, run one seed per invocation to keep each under 10 minutes) are
    # kept when they used the same settings; a seed run again replaces its rows
    earlier = json.loads((OUT / "adapter.json").read_text()) if (OUT / "adapter.json").is_file() else {}
    same = {k: v for k, v in vars(args).items() if k not in ("seeds", "adapters", "train_adapters")}
    if earlier.get("settings") == same:
        redone = {r["name"] for r in rows}
        rows = [r for r in earlier["rows"] if r["name"] not in redone] + rows
        wall = round(wall + earlier.get("wall_s", 0), 1)
    record = {"args": vars(args), "settings": same, "machine": info, "wall_s": wall, "rows": rows}
    (OUT / "adapter.json").write_text(json.dumps(record, indent=2) + "\n")
    choice, said = verdict(rows)
    lines = [f"# model.input_adapter: pretrained RGB EfficientNet-Lite0 on four bands ({info['measured_at']})", "",
             f"Machine: {describe(info)}", "",
             f"`python benchmarks/adapter.py {' '.join(sys.argv[1:])}`: synthetic four-band leaves (red, green, blue, "
             f"NIR; {args.per_class} per class, healthy vs stressed, chance 50 %), {args.size} px, seeds "
             f"{sorted({r['seed'] for r in rows})}, the same seed for every adapter. Start: a logistic-regression "
             f"probe on the untrained adapted network's pooled features (fit on train, loss on val). Trained: the "
             f"classify "
             f"recipe's schedule: {args.head_epochs} head epochs on cached features (lr 0.01), then "
             f"{args.fine_tune_epochs} fine-tune epochs of {args.fine_tune_blocks} backbone groups (the first layer "
             f"trains only with 8) at lr {args.fine_tune_lr}, {args.warmup} warmup epochs, batch {args.batch_size}; "
             f"accuracies of the best epoch by the run's own evaluation. Mean of the seeds (each seed's value in "
             f"brackets). Rows of earlier invocations with the same settings are kept. Total {record['wall_s']} s.",
             "", *summary(rows), "", "Rule (fixed before the run, validation only; see the benchmark's docstring):", "",
             *(f"* {line}" for line in said)]
    (OUT / "adapter.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
