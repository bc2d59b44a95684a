"""Time to accuracy on the PlantVillage subset: the shipped recipe against what a user would otherwise write or
pick, in one invocation on one machine (recorded), on the same bundled EfficientNet-Lite0 weights and split.

    python benchmarks/time_to_accuracy.py                        # recipe, classic (4 epochs), fastai (fine_tune(4))
    python benchmarks/time_to_accuracy.py --methods recipe --seeds 5
    python benchmarks/time_to_accuracy.py --methods recipe --recipe training.fine_tune.epochs=6

Methods (``--methods``, any of them, run in this order):
recipe   plantpheno with the shipped recipe classify (frozen Lite0, the activations of the
         frozen part cached once, head epochs, then the last blocks fine-tuned on the cache); seeds 0..N-1.
         Its figure is the run's own: wall time of ``train()`` (data checks, backbone pass, both phases, the test
         evaluation) and the test accuracy of the checkpoint it kept by validation.
classic  a loop written like the seed's: full fine-tune of the same pretrained Lite0 at 224 px with Adam 1e-4,
         PIL decode + RandomResizedCrop + flip every epoch, ``--classic-epochs`` epochs.
fastai   fastai's documented transfer recipe, ``vision_learner(dls, 'tf_efficientnet_lite0').fine_tune(N)``
         (one frozen epoch, then N unfrozen, one-cycle; ``ImageDataLoaders.from_df`` with ``Resize(224)``), the
         same bundled weights handed to timm as a local pretrained file, the train/val split of splits.csv.
head     (optional) the recipe without its fine-tune phase; ``defaults``: the recipe classify_scratch.

classic and fastai are evaluated on the test split after every epoch (that time is left out of their clocks);
each one's time to an accuracy is the training time up to the first epoch that reached it, plus one test
evaluation (the recipe's wall time includes one too). The table gives each one's best test accuracy and the time
to it, and the time each needs to reach the recipe's accuracy. Targets (issue 20): the recipe >= 97 % in at most
a quarter of the classic loop's time to its own best, and faster than fastai to the same accuracy.

Test accuracy here measures; it chooses nothing (the recipe's settings were chosen on the validation split:
benchmarks/recipe_choice.py). Writes benchmarks/results/time_to_accuracy.{json,md} with the machine.
``--manifest``/``--image-size`` run it on other data (the tests use a tiny synthetic set).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA = REPO.parent / "shared" / "data" / "plantvillage-subset" / "splits.csv"
sys.path.insert(0, str(HERE))
from machine import describe, machine  # benchmarks/ is not a package

BACKBONE = "tf_efficientnet_lite0"
TARGET_ACCURACY = 0.97


def _rows(manifest: Path) -> tuple[list[dict[str, str]], list[str]]:
    rows = list(csv.DictReader(manifest.open()))
    for r in rows:
        r["file"] = str((manifest.parent / r["path"]).resolve())
    return rows, sorted({r["label"] for r in rows})


def _curve(epochs: list[dict[str, float]], test_s: float) -> dict[str, Any]:
    """Best test accuracy, the time to it, and the time to each accuracy (first epoch that reached it)."""
    best = max(epochs, key=lambda e: e["test_accuracy"])  # max() keeps the first of equal values
    return {"epochs": epochs, "test_eval_s": test_s, "test_accuracy": best["test_accuracy"],
            "time_to_best_s": best["train_s"] + test_s, "best_epoch": best["epoch"]}


def time_to(result: dict[str, Any], accuracy: float) -> float | None:
    """Seconds a per-epoch method took to first reach ``accuracy`` on test (None if it never did)."""
    for e in result["epochs"]:
        if e["test_accuracy"] >= accuracy - 1e-9:
            return e["train_s"] + result["test_eval_s"]
    return None


def classic(manifest: Path, *, epochs: int, image_size: int) -> dict[str, Any]:
    """The seed-style loop: Dataset over splits.csv, PIL every epoch, the whole network trained."""
    from PIL import Image
    from torchvision import transforms as T

    from plantpheno.config import ModelConfig
    from plantpheno.models import build_model

    rows, classes = _rows(manifest)
    norm = T.Normalize([0.5] * 3, [0.5] * 3)
    train_tf = T.Compose([T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(), T.ToTensor(), norm])
    eval_tf = T.Compose([T.Resize(image_size), T.CenterCrop(image_size), T.ToTensor(), norm])

    class Split(torch.utils.data.Dataset):
        def __init__(self, split: str, tf: Any) -> None:
            self.items = [(r["file"], classes.index(r["label"])) for r in rows if r["split"] == split]
            self.tf = tf

        def __len__(self) -> int:
            return len(self.items)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            path, label = self.items[i]
            return self.tf(Image.open(path).convert("RGB")), label

    def test_accuracy(model: torch.nn.Module) -> float:
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for x, y in torch.utils.data.DataLoader(Split("test", eval_tf), batch_size=64, num_workers=1):
                correct += int((model(x).argmax(1) == y).sum())
                total += len(y)
        return correct / total

    start = time.perf_counter()
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone=BACKBONE, pretrained="bundled"), num_outputs=len(classes))
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    train = torch.utils.data.DataLoader(Split("train", train_tf), batch_size=32, shuffle=True, num_workers=1)
    curve, paused, test_s = [], 0.0, 0.0
    for epoch in range(1, epochs + 1):
        model.train()
        for x, y in train:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        trained = time.perf_counter() - start - paused
        tick = time.perf_counter()
        accuracy = test_accuracy(model)
        test_s = time.perf_counter() - tick
        paused += test_s
        curve.append({"epoch": epoch, "train_s": trained, "test_accuracy": accuracy})
    return _curve(curve, test_s)


def fastai_fine_tune(manifest: Path, *, epochs: int, image_size: int, workdir: Path) -> dict[str, Any]:
    """fastai's documented transfer learning, on the bundled Lite0 weights (a local file timm loads)."""
    import pandas as pd
    from fastai.callback.core import Callback
    from fastai.vision.all import ImageDataLoaders, Resize, accuracy, vision_learner

    from plantpheno.models.bundled import bundled_state_dict

    weights = workdir / f"{BACKBONE}.pth"
    torch.save(bundled_state_dict(BACKBONE), weights)
    rows, _ = _rows(manifest)
    # paths relative to the manifest's folder (from_df joins them to its ``path``)
    frame = pd.DataFrame([{"file": r["path"], "label": r["label"], "is_valid": r["split"] == "val"}
                          for r in rows if r["split"] in ("train", "val")])
    test_files = [r["file"] for r in rows if r["split"] == "test"]
    test_labels = [r["label"] for r in rows if r["split"] == "test"]

    class TestEachEpoch(Callback):
        """Test accuracy after each epoch, its time kept off the clock."""

        order = 100

        def before_fit(self) -> None:
            self.curve: list[dict[str, float]] = getattr(self, "curve", [])

        def after_epoch(self) -> None:
            tick = time.perf_counter()
            # the model on the test images directly: learn.get_preds would run this callback again
            model, vocab, predicted = self.learn.model, list(self.learn.dls.vocab), []
            model.eval()
            with torch.no_grad():
                for (images,) in self.learn.dls.test_dl(test_files, with_labels=False):
                    predicted += [vocab[i] for i in model(images).argmax(1).tolist()]
            acc = sum(p == t for p, t in zip(predicted, test_labels)) / len(test_labels)
            now = time.perf_counter()
            self.test_s = now - tick
            state["paused"] += self.test_s
            self.curve.append({"epoch": len(self.curve) + 1, "train_s": now - state["start"] - state["paused"],
                               "test_accuracy": acc})

    state = {"start": time.perf_counter(), "paused": 0.0}
    torch.manual_seed(0)
    dls = ImageDataLoaders.from_df(frame, fn_col="file", label_col="label", valid_col="is_valid",
                                   item_tfms=Resize(image_size), bs=32, path=manifest.parent)
    tester = TestEachEpoch()
    learn = vision_learner(dls, BACKBONE, metrics=accuracy, cbs=[tester], path=workdir,
                           pretrained_cfg_overlay={"file": str(weights)})
    with learn.no_bar():
        learn.fine_tune(epochs)
    return _curve(tester.curve, tester.test_s)


def plantpheno_run(overrides: list[str], out: Path, config_name: str, manifest: Path) -> dict[str, Any]:
    from plantpheno.config import load_config
    from plantpheno.pipeline import train

    config = load_config(config_name,
                         [f"data.manifest={manifest}", "data.root=null", f"output_dir={out}",
                          "training.progress_bar=false", "tracking.system_metrics_interval=0", *overrides])
    start = time.perf_counter()
    result = train(config)
    wall = time.perf_counter() - start
    return {"wall_s": wall, "test_accuracy": result.metrics["accuracy"], "overrides": overrides,
            **_selected_val(result.run_dir), **_phase_times(result.run_dir),
            "calibration": _calibration(result.metrics)}


def _calibration(metrics: dict[str, Any]) -> dict[str, Any] | None:
    """Test-split calibration of the kept checkpoint (issue 14): ECE before and after the temperature fitted on
    the validation split, the change's bootstrap interval, and T."""
    block = metrics.get("calibration")
    if not block:
        return None
    out: dict[str, Any] = {"ece_before": block["before"]["ece"], "nll_before": block["before"].get("nll")}
    if block.get("after"):
        out.update(temperature=block["temperature"], ece_after=block["after"]["ece"],
                   nll_after=block["after"].get("nll"))
    if block.get("ece_change"):
        out["ece_change"] = {k: block["ece_change"][k] for k in ("estimate", "low", "high", "confidence")
                             if k in block["ece_change"]}
    return out


def _selected_val(run_dir: Path) -> dict[str, float]:
    """Validation accuracy, loss and macro F1 of the epoch whose checkpoint was kept (the first best
    val/macro_f1, the default monitor): what recipes are chosen by, since the test split must not choose."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "val/macro_f1" in r]
    best = max(rows, key=lambda r: r["val/macro_f1"])  # max() keeps the first of equal values
    return {"val_accuracy": best["val/accuracy"], "val_macro_f1": best["val/macro_f1"], "val_loss": best["val/loss"],
            "kept_epoch": best["epoch"]}


def _phase_times(run_dir: Path) -> dict[str, float]:
    """Seconds the epochs of each phase spent training (the metrics log's time/epoch_s; validation excluded)."""
    config = json.loads(json.dumps(__import__("yaml").safe_load((run_dir / "config.yaml").read_text())))
    head_epochs = config["training"]["epochs"]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {"head_train_s": sum(r["time/epoch_s"] for r in rows if r["epoch"] <= head_epochs),
            "fine_tune_train_s": sum(r["time/epoch_s"] for r in rows if r["epoch"] > head_epochs)}


def compare(results: dict[str, dict[str, Any]]) -> list[str]:
    """The targets' lines: recipe vs the classic loop's time to its best, and vs fastai to the same accuracy."""
    recipes = [r for name, r in results.items() if name.startswith("recipe")]
    if not recipes:
        return []
    lines = []
    for name, r in results.items():
        if not name.startswith("recipe"):
            continue
        acc, wall = r["test_accuracy"], r["wall_s"]
        parts = [f"{name}: {100 * acc:.1f} % in {wall:.0f} s ({'>=' if acc >= TARGET_ACCURACY else 'BELOW'} "
                 f"{100 * TARGET_ACCURACY:.0f} %)"]
        if "classic" in results:
            c = results["classic"]
            ratio = wall / c["time_to_best_s"]
            parts.append(f"{ratio:.2f}x the classic loop's time to its best ({100 * c['test_accuracy']:.1f} % in "
                         f"{c['time_to_best_s']:.0f} s; target <= 0.25x: {'met' if ratio <= 0.25 else 'NOT met'})")
        if "fastai" in results:
            f = results["fastai"]
            reached = time_to(f, acc)
            if reached is None:
                parts.append(f"fastai never reached {100 * acc:.1f} % (its best {100 * f['test_accuracy']:.1f} % "
                             f"in {f['time_to_best_s']:.0f} s)")
            else:
                parts.append(f"{wall / reached:.2f}x fastai's time to the same accuracy ({reached:.0f} s; target < "
                             f"1x: {'met' if wall < reached else 'NOT met'})")
        lines.append("; ".join(parts))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["recipe", "classic", "fastai"],
                        choices=["recipe", "classic", "fastai", "head", "defaults"])
    parser.add_argument("--seeds", type=int, default=1, help="run the recipe (and head) with seeds 0..N-1")
    parser.add_argument("--classic-epochs", type=int, default=4)
    parser.add_argument("--fastai-epochs", type=int, default=4, help="N of fine_tune(N) (after 1 frozen epoch)")
    parser.add_argument("--recipe", nargs="*", default=[], help="overrides of the recipe, e.g. training.fine_tune.epochs=6")
    parser.add_argument("--manifest", type=Path, default=DATA)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "time_to_accuracy")
    args = parser.parse_args()
    if not args.manifest.is_file():
        raise SystemExit(f"{args.manifest} not found (the PlantVillage subset belongs in ../shared/data)")
    info = machine()
    size = [f"data.image_size={args.image_size}"] if args.image_size != 224 else []
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods:
            if method == "recipe":
                for seed in range(args.seeds):
                    results[f"recipe seed {seed}"] = plantpheno_run(
                        [f"seed={seed}", *size, *args.recipe], Path(tmp), "classify", args.manifest)
            elif method == "head":
                for seed in range(args.seeds):
                    results[f"head only seed {seed}"] = plantpheno_run(
                        [f"seed={seed}", *size, *args.recipe, "training.fine_tune.epochs=0"], Path(tmp),
                        "classify", args.manifest)
            elif method == "defaults":
                results["defaults"] = plantpheno_run([], Path(tmp), "classify_scratch", args.manifest)
            elif method == "classic":
                results["classic"] = classic(args.manifest, epochs=args.classic_epochs, image_size=args.image_size)
            elif method == "fastai":
                results["fastai"] = fastai_fine_tune(args.manifest, epochs=args.fastai_epochs,
                                                     image_size=args.image_size, workdir=Path(tmp))
    lines = ["# Time to accuracy, PlantVillage subset, one invocation", "", f"Machine: {describe(info)}", "",
             f"Data: {args.manifest}, {args.image_size} px. Other processes on the same cores slow every row alike "
             "only if the load stays even: compare rows of one file, and read the load average above.", "",
             "| method | time s | test accuracy | detail |", "|---|---|---|---|"]
    for name, r in results.items():
        if "epochs" in r:
            per_epoch = ", ".join(f"{100 * e['test_accuracy']:.1f} % @ {e['train_s'] + r['test_eval_s']:.0f} s"
                                  for e in r["epochs"])
            lines.append(f"| {name} (best epoch {r['best_epoch']}) | {r['time_to_best_s']:.0f} | "
                         f"{r['test_accuracy']:.4f} | per epoch: {per_epoch} |")
        else:
            lines.append(f"| {name} | {r['wall_s']:.0f} | {r['test_accuracy']:.4f} | val {r['val_accuracy']:.4f} "
                         f"(kept epoch {r['kept_epoch']}); head epochs {r['head_train_s']:.0f} s, fine-tune epochs "
                         f"{r['fine_tune_train_s']:.0f} s {' '.join(r['overrides'])} |")
    verdict = compare(results)
    lines += ["", *[f"- {v}" for v in verdict]] if verdict else []
    for name, r in results.items():  # issue 14: does the validation-fitted temperature lower the test ECE?
        c = r.get("calibration")
        if c and "ece_after" in c:
            change = c.get("ece_change") or {}
            interval = (f", change {change['estimate']:+.4f} ({change['confidence']:.0%} interval {change['low']:+.4f} "
                        f"to {change['high']:+.4f})" if "low" in change else "")
            lines.append(f"- {name}: test ECE {c['ece_before']:.4f} -> {c['ece_after']:.4f} with T = "
                         f"{c['temperature']:.3f} fitted on val{interval}; NLL {c['nll_before']:.4f} -> "
                         f"{c['nll_after']:.4f}")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(
        {"machine": info, "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
         "results": results, "verdict": verdict}, indent=2) + "\n")


if __name__ == "__main__":
    main()
