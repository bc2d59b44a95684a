"""Open-set benchmark: how well each OOD score tells unknown images from known ones, on real leaf photos.

    python benchmarks/ood.py [--seeds 3] [--far 120]

On the PlantVillage subset (15 classes): per seed, 3 classes drawn at random are held out and a head is trained on
the other 12, on the pooled features of the frozen, bundled EfficientNet-Lite0 (the classify recipe's cached-feature
head phase: AdamW, learning rate 0.01, weight decay 0.05, 60 epochs, batch 32; the recipe's fine-tune phase is left
out so that the backbone pass runs once for all seeds). The softmax temperature is fitted on the in-distribution
validation images. Every choice is made on VALIDATION: k of the kNN score and the default score are those with the
highest AUROC between the in-distribution validation images and the held-out classes' validation images (OOD-val);
the threshold keeps 95 % of the in-distribution validation images. On TEST each score's AUROC and FPR at 95 % TPR
is reported for near-OOD (held-out classes' test images against the in-distribution test images) and far-OOD:
synthetic leaves (``plantpheno.data.synth``, plain backgrounds) and non-leaf images (soil, noise, textures,
synthesised here). Medians over seeds with min and max. Writes benchmarks/results/ood.{json,md} with the machine.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA = REPO.parent / "shared" / "data" / "plantvillage-subset"
sys.path.insert(0, str(HERE))
from machine import describe, machine  # benchmarks/ is not a package

KS = (1, 5, 10, 20, 50)
TARGETS = ("near", "synthetic_leaves", "non_leaf")
HELD_OUT = 3


def non_leaf_images(out: Path, n: int, seed: int) -> list[Path]:
    """Soil (brown smooth noise with pebbles), white noise and textures (stripes, checkers, smooth colour fields)."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        kind = i % 4
        if kind == 0:  # soil
            base = np.array([110, 80, 50]) * rng.uniform(0.6, 1.2)
            noise = np.asarray(Image.fromarray((rng.random((32, 32)) * 255).astype(np.uint8)).resize((256, 256)))
            img = np.clip(base[None, None] * (0.7 + 0.6 * noise[..., None] / 255), 0, 255).astype(np.uint8)
            pil = Image.fromarray(img)
            draw = ImageDraw.Draw(pil)
            for _ in range(int(rng.integers(5, 40))):
                x, y, r = rng.integers(0, 256), rng.integers(0, 256), rng.integers(2, 10)
                grey = int(rng.integers(90, 200))
                draw.ellipse([x - r, y - r, x + r, y + r], fill=(grey, grey - 10, grey - 25))
        elif kind == 1:  # noise
            pil = Image.fromarray((rng.random((256, 256, 3)) * 255).astype(np.uint8))
        elif kind == 2:  # stripes / checkers
            yy, xx = np.mgrid[0:256, 0:256]
            period = rng.integers(8, 48)
            pattern = ((xx // period + (yy // period) * int(rng.integers(0, 2))) % 2).astype(float)
            a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
            pil = Image.fromarray((a * pattern[..., None] + b * (1 - pattern[..., None])).astype(np.uint8))
        else:  # a smooth colour field
            small = (rng.random((4, 4, 3)) * 255).astype(np.uint8)
            pil = Image.fromarray(small).resize((256, 256), Image.Resampling.BICUBIC).filter(ImageFilter.BLUR)
        path = out / f"nonleaf_{i:04d}.png"
        pil.save(path)
        paths.append(path)
    return paths


def synthetic_leaves(out: Path, n: int, seed: int) -> list[Path]:
    from plantpheno.data.synth import DISEASE_CLASSES, disease_example

    paths = []
    for i in range(n):
        image, _, _ = disease_example(DISEASE_CLASSES[i % len(DISEASE_CLASSES)], i, image_size=224, seed=seed)
        path = out / f"synth_{i:04d}.png"
        image.save(path)
        paths.append(path)
    return paths


def featurise(paths: list[Path]) -> np.ndarray:
    from plantpheno.config import ModelConfig
    from plantpheno.models import build_model
    from plantpheno.training.features import CPU_PASS_BATCH, extract_features

    model = build_model(ModelConfig(backbone="tf_efficientnet_lite0", pretrained="bundled", freeze_backbone=True),
                        num_outputs=15)
    mean, std = model.pretrained_cfg["mean"], model.pretrained_cfg["std"]  # as plantpheno's normalization() takes
    return extract_features(model, paths, image_size=224, mean=mean, std=std, batch_size=CPU_PASS_BATCH,
                            device=torch.device("cpu"), num_workers=0).numpy()


def train_head(x: np.ndarray, y: np.ndarray, classes: int, seed: int) -> torch.nn.Linear:
    """The recipe's head phase on cached features: AdamW (lr 0.01, wd 0.05), cosine schedule, 60 epochs, batch 32."""
    torch.manual_seed(seed)
    head = torch.nn.Linear(x.shape[1], classes)
    opt = torch.optim.AdamW(head.parameters(), lr=0.01, weight_decay=0.05)
    epochs, batch = 60, 32
    steps = epochs * ((len(x) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    xt, yt = torch.from_numpy(x).float(), torch.from_numpy(y).long()
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), batch):
            idx = order[i:i + batch]
            loss = torch.nn.functional.cross_entropy(head(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return head.eval()


def one_seed(seed: int, feats: np.ndarray, labels: np.ndarray, splits: np.ndarray, far: dict[str, np.ndarray],
             num_classes: int) -> dict[str, Any]:
    from plantpheno.evaluation import ood
    from plantpheno.evaluation.calibration import fit_temperature

    rng = np.random.default_rng(seed)
    held = np.sort(rng.choice(num_classes, HELD_OUT, replace=False))
    known = np.setdiff1d(np.arange(num_classes), held)
    remap = {int(c): i for i, c in enumerate(known)}
    is_known = np.isin(labels, known)
    part = {(s, k): (splits == s) & (is_known if k else ~is_known) for s in ("train", "val", "test") for k in (0, 1)}
    ytr = np.array([remap[int(c)] for c in labels[part["train", 1]]])
    head = train_head(feats[part["train", 1]], ytr, len(known), seed)

    def logits(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return head(torch.from_numpy(x).float()).numpy()

    yval = np.array([remap[int(c)] for c in labels[part["val", 1]]])
    fit = fit_temperature(logits(feats[part["val", 1]]), yval)
    temperature = 1.0 if fit["at_bound"] else float(fit["temperature"])
    bank = ood.normalise(feats[part["train", 1]])
    maha = ood.fit_mahalanobis(bank, ytr)

    def scores(x: np.ndarray) -> dict[str, np.ndarray]:
        return ood.all_scores(logits=logits(x), features=x, bank=bank, labels=ytr, ks=KS, temperature=temperature,
                              maha=maha)

    val_in = scores(feats[part["val", 1]])
    # energy+knn at each k: both parts standardised by their mean and std on the in-distribution val images
    norms = {name: (float(np.mean(v)), float(np.std(v))) for name, v in val_in.items()}

    def with_combined(found: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        z = {name: (v - norms[name][0]) / norms[name][1] for name, v in found.items()}
        return {**found, **{f"energy+knn@{k}": z["energy"] + z[f"knn@{k}"] for k in KS}}

    val_in, val_out = with_combined(val_in), with_combined(scores(feats[part["val", 0]]))
    val_auroc = {name: ood.auroc(val_in[name], val_out[name]) for name in val_in}
    best_k = max(KS, key=lambda k: (val_auroc[f"knn@{k}"], -k))
    combined_k = max(KS, key=lambda k: (val_auroc[f"energy+knn@{k}"], -k))
    candidates = ["msp", "energy", f"knn@{best_k}", "mahalanobis", f"energy+knn@{combined_k}"]
    default = max(candidates, key=lambda name: val_auroc[name])
    test_in = with_combined(scores(feats[part["test", 1]]))
    targets = {"near": with_combined(scores(feats[part["test", 0]])),
               **{name: with_combined(scores(x)) for name, x in far.items()}}
    yte = np.array([remap[int(c)] for c in labels[part["test", 1]]])
    result: dict[str, Any] = {
        "seed": seed, "held_out_classes": [int(c) for c in held], "k": best_k, "combined_k": combined_k,
        "default_score": default,
        "temperature": temperature, "val_auroc": val_auroc,
        "test_accuracy_known": float((logits(feats[part["test", 1]]).argmax(1) == yte).mean()),
        "sizes": {"train": int(part["train", 1].sum()), "val_in": int(part["val", 1].sum()),
                  "val_out": int(part["val", 0].sum()), "test_in": int(part["test", 1].sum()),
                  "test_near": int(part["test", 0].sum()), **{n: len(x) for n, x in far.items()}}}
    for target, out in targets.items():
        result[target] = {}
        for name in candidates:
            threshold = float(np.quantile(val_in[name], 0.95, method="higher"))  # keeps 95 % of val, as fitted
            result[target][name.split("@")[0]] = {
                "auroc": ood.auroc(test_in[name], out[name]), "fpr95": ood.fpr_at_tpr(test_in[name], out[name]),
                "flagged_at_val_threshold": float(np.mean(out[name] > threshold)),
                "known_test_kept": float(np.mean(test_in[name] <= threshold))}
    return result


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def spread(values: list[float]) -> dict[str, float]:
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    out: dict[str, Any] = {"default_score_per_seed": [r["default_score"] for r in runs],
                           "k_per_seed": [r["k"] for r in runs],
                           "combined_k_per_seed": [r["combined_k"] for r in runs],
                           "test_accuracy_known": spread([r["test_accuracy_known"] for r in runs])}
    for target in TARGETS:
        out[target] = {score: {m: spread([r[target][score][m] for r in runs]) for m in runs[0][target][score]}
                       for score in runs[0][target]}
        out[target]["default"] = {m: spread([r[target][r["default_score"].split("@")[0]][m] for r in runs])
                                  for m in ("auroc", "fpr95", "flagged_at_val_threshold", "known_test_kept")}
    return out


def markdown(summary: dict[str, Any], info: dict[str, Any], wall: float, args: argparse.Namespace) -> str:
    lines = ["# Out-of-distribution scores on the PlantVillage subset (3 held-out classes)", "",
             f"`python benchmarks/ood.py --seeds {args.seeds} --far {args.far}`, {wall:.0f} s; {describe(info)}", "",
             f"Default score per seed (chosen on validation): {summary['default_score_per_seed']}; k per seed: "
             f"{summary['k_per_seed']} (knn), {summary['combined_k_per_seed']} (energy+knn). Accuracy on the 12 "
             f"known classes (test): {summary['test_accuracy_known']['median']:.3f}.", "",
             "| target | score | AUROC median (min-max) | FPR95 median (min-max) | flagged at the val threshold |",
             "|---|---|---|---|---|"]
    for target in TARGETS:
        for score, m in summary[target].items():
            a, f, g = m["auroc"], m["fpr95"], m["flagged_at_val_threshold"]
            lines.append(f"| {target} | {score} | {a['median']:.3f} ({a['min']:.3f}-{a['max']:.3f}) | "
                         f"{f['median']:.3f} ({f['min']:.3f}-{f['max']:.3f}) | {g['median']:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--far", type=int, default=120, help="synthetic leaves and non-leaf images, each")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "ood")
    parser.add_argument("--features", type=Path, default=None,
                        help="a .npy file keeping the backbone features: read when it exists, else written")
    args = parser.parse_args()
    torch.set_num_threads(2)
    info, started = machine(), time.perf_counter()
    with open(DATA / "splits.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    names = sorted({r["label"] for r in rows})
    paths = [DATA / r["path"] for r in rows]
    labels = np.array([names.index(r["label"]) for r in rows])
    splits = np.array([r["split"] for r in rows])
    if args.features is not None and args.features.is_file():  # the backbone pass of an earlier run (minutes)
        everything = np.load(args.features)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            synth = synthetic_leaves(Path(tmp), args.far, seed=7)
            other = non_leaf_images(Path(tmp), args.far, seed=11)
            everything = featurise(paths + synth + other)
        if args.features is not None:
            np.save(args.features, everything)
    feats = everything[:len(paths)]
    far = {"synthetic_leaves": everything[len(paths):len(paths) + args.far],
           "non_leaf": everything[len(paths) + args.far:]}
    runs = [one_seed(seed, feats, labels, splits, far, len(names)) for seed in range(args.seeds)]
    wall = time.perf_counter() - started
    summary = summarise(runs)
    record = {"benchmark": "ood", "command": f"python benchmarks/ood.py --seeds {args.seeds} --far {args.far}",
              "machine": info, "wall_s": wall, "classes": names, "summary": summary, "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(summary, info, wall, args))
    print(markdown(summary, info, wall, args))


if __name__ == "__main__":
    main()
