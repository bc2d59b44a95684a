"""Time-to-accuracy on the PlantVillage subset (its own block split), three ways, same machine and run.

    python benchmarks/time_to_accuracy.py [--classic-epochs 1] [--skip classic defaults] [--seeds 3]

(a) classic: a loop written like the seed's — full fine-tune of pretrained EfficientNet-Lite0 at
    224 px, PIL decode + transforms every epoch, no cache (the bundled ImageNet weights, so only the
    training method differs from (c));
(b) plantpheno, the shipped configs/plantvillage.yaml (ResNet-10 from scratch, 96 px);
(c) plantpheno with bundled Lite0 weights, frozen backbone, the feature cache and a short fine-tune of
    the last two blocks on cached activations (224 px): the shipped configs/plantvillage_pretrained.yaml;
(c0) (c) without the fine-tune phase (head on cached features only);
(d) (c) plus a second, flipped view of each training image in the cache.
``--seeds N`` repeats (c), (c0) and (d) with seeds 0..N-1 (head init and order; the split is fixed): the test
split has 343 images, so one run's accuracy moves by a few tenths of a point with the seed.
Wall time includes data checks, training and the test evaluation. Writes
benchmarks/results/time_to_accuracy.{json,md}. Needs ../shared/data/plantvillage-subset.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "plantvillage-subset"


def classic(epochs: int) -> dict[str, float]:
    """The seed-style baseline: Dataset over splits.csv, PIL every epoch, whole network trained."""
    from PIL import Image
    from torchvision import transforms as T

    from plantpheno.config import ModelConfig
    from plantpheno.models import build_model

    rows = list(csv.DictReader((DATA / "splits.csv").open()))
    classes = sorted({r["label"] for r in rows})
    norm = T.Normalize([0.5] * 3, [0.5] * 3)
    train_tf = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(), norm])
    eval_tf = T.Compose([T.Resize(224), T.CenterCrop(224), T.ToTensor(), norm])

    class Split(torch.utils.data.Dataset):
        def __init__(self, split, tf):
            self.items = [(DATA / r["path"], classes.index(r["label"])) for r in rows if r["split"] == split]
            self.tf = tf

        def __len__(self):
            return len(self.items)

        def __getitem__(self, i):
            path, label = self.items[i]
            return self.tf(Image.open(path).convert("RGB")), label

    start = time.perf_counter()
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="tf_efficientnet_lite0", pretrained="bundled"), num_outputs=len(classes))
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    train = torch.utils.data.DataLoader(Split("train", train_tf), batch_size=32, shuffle=True, num_workers=1)
    for _ in range(epochs):
        model.train()
        for x, y in train:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in torch.utils.data.DataLoader(Split("test", eval_tf), batch_size=64, num_workers=1):
            correct += int((model(x).argmax(1) == y).sum())
            total += len(y)
    return {"wall_s": time.perf_counter() - start, "test_accuracy": correct / total}


def plantpheno_run(overrides: list[str], out: Path, config_name: str = "plantvillage.yaml") -> dict[str, float]:
    from plantpheno.config import load_config
    from plantpheno.pipeline import train

    config = load_config(REPO / "configs" / config_name,
                         [f"data.manifest={DATA / 'splits.csv'}", f"output_dir={out}", "training.progress_bar=false",
                          "tracking.system_metrics_interval=0", *overrides])
    start = time.perf_counter()
    result = train(config)
    wall = time.perf_counter() - start
    return {"wall_s": wall, "test_accuracy": result.metrics["accuracy"], **_selected_val(result.run_dir)}


def _selected_val(run_dir: Path) -> dict[str, float]:
    """Validation accuracy and macro F1 of the epoch whose checkpoint was kept (the first best val/macro_f1, the
    default monitor): the figures to choose a recipe by, since the test split must not choose it."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "val/macro_f1" in r]
    best = max(rows, key=lambda r: r["val/macro_f1"])  # max() keeps the first of equal values
    return {"val_accuracy": best["val/accuracy"], "val_macro_f1": best["val/macro_f1"]}


def _merge_earlier(path: Path, results: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """This run's rows, after the earlier rows of the methods ((a), (b), (c), ...) it did not run."""
    if not path.is_file():
        return results
    ran = {name.split(" ", 1)[0] for name in results}
    earlier = {name: r for name, r in json.loads(path.read_text()).items() if name.split(" ", 1)[0] not in ran}
    return {**earlier, **results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classic-epochs", type=int, default=1)
    parser.add_argument("--skip", nargs="*", default=[], choices=["classic", "defaults", "cached", "head", "views"])
    parser.add_argument("--seeds", type=int, default=1, help="repeat (c), (c0) and (d) with seeds 0..N-1")
    args = parser.parse_args()
    if not (DATA / "splits.csv").is_file():
        raise SystemExit(f"PlantVillage subset not found at {DATA}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        if "classic" not in args.skip:
            results[f"(a) classic full fine-tune, Lite0 224 px, {args.classic_epochs} epoch(s)"] = classic(
                args.classic_epochs)
        if "defaults" not in args.skip:
            results["(b) plantpheno configs/plantvillage.yaml (ResNet-10 scratch, 96 px)"] = plantpheno_run(
                [], Path(tmp))
        flips = ["data.augment.enabled=true", "data.augment.crop_scale=[1,1]", "data.augment.rotation=0",
                 "data.augment.color_jitter=0", "data.augment.hue=0", "training.feature_cache_views=2"]
        recipe = yaml.safe_load((REPO / "configs" / "plantvillage_pretrained.yaml").read_text())["training"]
        for seed in range(args.seeds):
            if "cached" not in args.skip:  # the shipped recipe, as is
                results[f"(c) configs/plantvillage_pretrained.yaml: bundled Lite0, frozen, cache, head + "
                        f"{recipe['fine_tune']['epochs']} fine-tune epochs of the last "
                        f"{recipe['fine_tune']['blocks']} blocks, 224 px, seed {seed}"] = plantpheno_run(
                    [f"seed={seed}"], Path(tmp), "plantvillage_pretrained.yaml")
            if "head" not in args.skip:
                results[f"(c0) as (c) without the fine-tune phase, seed {seed}"] = plantpheno_run(
                    [f"seed={seed}", "training.fine_tune.epochs=0"], Path(tmp), "plantvillage_pretrained.yaml")
            if "views" not in args.skip:
                results[f"(d) as (c) ({recipe['fine_tune']['epochs']} fine-tune epochs) + a cached flip view "
                        f"(feature_cache_views=2), seed {seed}"] = plantpheno_run(
                    [f"seed={seed}", *flips], Path(tmp), "plantvillage_pretrained.yaml")
    out = Path(__file__).parent / "results"
    results = _merge_earlier(out / "time_to_accuracy.json", results)
    lines = [f"# Time to accuracy, PlantVillage subset ({torch.get_num_threads()} threads)", "",
             "Rows of methods not run this time are kept from earlier runs (see the JSON's history).", "",
             "| method | wall s | test accuracy | val accuracy (kept epoch) |", "|---|---|---|---|"]
    lines += [f"| {name} | {r['wall_s']:.0f} | {r['test_accuracy']:.4f} | "
              f"{r['val_accuracy']:.4f} |" if "val_accuracy" in r else f"| {name} | {r['wall_s']:.0f} | "
              f"{r['test_accuracy']:.4f} | - |" for name, r in results.items()]
    text = "\n".join(lines)
    print(text)
    out.mkdir(exist_ok=True)
    (out / "time_to_accuracy.md").write_text(text + "\n")
    (out / "time_to_accuracy.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
