"""Why the ``mean`` input adapter did not start better than random: cheap checks, no training (issue 31).

    python benchmarks/adapter_diagnose.py [--per-class 150] [--size 64] [--seeds 0 1 2]

The bundled ImageNet EfficientNet-Lite0 on the synthetic four-band set (red, green, blue, NIR; the stress shows only
in NIR), per-band standardised as a band run feeds it. For each first-layer variant and seed:

* the input scale: the standard deviation of each band as the model sees it, and of the same images' red, green and
  blue as an RGB run of this backbone would feed them (``(x - 0.5) / 0.5`` for the TF Lite weights);
* the stem: the standard deviation of the first convolution's output, and the share of the stem's ReLU6 outputs
  clipped at 0 or at 6 (eval-mode BatchNorm with its ImageNet statistics), against the RGB model on the RGB input;
* the probe: a logistic regression on the pooled features (fit on train, log loss and accuracy on validation; a
  larger set than ``benchmarks/adapter.py``'s 18 validation images, whose start losses ranged 0.07 to 1.4 between
  seeds of one adapter).

Variants: ``nearest``, ``mean`` (as now, and as before the input-std fix), ``tile``, ``random`` and ``rgb+zero``
(the pretrained RGB filters, NIR weights 0: RGB alone, which cannot see the stress) and ``rgb+random`` (RGB filters
copied, NIR from a random filter of the RGB filters' norm); ``tile`` and ``rgb+random`` also times the input
contrast the Lite0 weights saw (0.45).
Prints a JSON line per (variant, seed) and a summary; writes benchmarks/results/adapter_diagnose.{json,md}.
"""

from __future__ import annotations

import argparse
import json
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


def variants(rgb: Any) -> dict[str, Any]:
    """The first-layer weights ``(32, 4, 3, 3)`` of each variant from the pretrained ``(32, 3, 3, 3)`` ones."""
    import torch
    from torch import nn

    from plantpheno.models import input_adapter as ia

    from timm.data import IMAGENET_DEFAULT_STD

    # the weights the adapters give now (scaled to the input std the Lite0 weights saw: ImageNet's over 0.5) ...
    seen = [v / 0.5 for v in IMAGENET_DEFAULT_STD]
    out = {name: ia.adapted_weight(rgb, RGBN, name, seen) for name in ia.METHODS if name != "random"}
    # ... and the mean rule as it was, scaled for unit-variance RGB input
    out["mean (unit-std target, before the fix)"] = ia.adapted_weight(rgb, RGBN, "mean")
    torch.manual_seed(0)
    conv = nn.Conv2d(4, rgb.shape[0], rgb.shape[2:], bias=False)
    out["random"] = conv.weight.detach().clone()
    out["rgb+zero"] = torch.cat([rgb, torch.zeros_like(rgb[:, :1])], dim=1)
    noise = torch.randn_like(rgb[:, :1])
    norm = rgb.flatten(2).norm(dim=2).mean(dim=1).view(-1, 1, 1, 1)  # each output filter's mean RGB filter norm
    out["rgb+random"] = torch.cat([rgb, noise / noise.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * norm], dim=1)
    # tile and rgb+random also scaled by the input contrast the pretrained network saw
    contrast = float(np.mean(IMAGENET_DEFAULT_STD)) / 0.5
    for name in ("tile", "rgb+random"):
        out[f"{name} x{contrast:.2f}"] = out[name] * contrast
    return out


def measure(data: Path, out: Path, seed: int, size: int) -> list[dict[str, Any]]:
    import torch
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.metrics import log_loss
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from plantpheno.config import validate_config
    from plantpheno.device import seed_everything
    from plantpheno.models.bundled import bundled_state_dict
    from plantpheno.pipeline import _setup
    from plantpheno.reporting import RecordingReporter

    raw = {"seed": seed, "output_dir": str(out), "device": "cpu",
           "data": {"root": str(data), "bands": RGBN, "image_size": size, "batch_size": 1024, "num_workers": 0,
                    "checks": {"enabled": False}, "augment": {"enabled": False}},
           "model": {"backbone": "tf_efficientnet_lite0", "pretrained": "bundled"}, "tracking": {"backends": []}}
    seed_everything(seed, deterministic=False)
    job = _setup(validate_config(raw), manifest=None, load_pretrained=True, reporter=RecordingReporter(),
                 splits=("train", "val"))
    model = job.model.eval()
    norm = job.loaders["train"].dataset.norm
    batches = {s: next(iter(job.loaders[s])) for s in ("train", "val")}
    rgb_weight = bundled_state_dict("tf_efficientnet_lite0")["conv_stem.weight"]
    # what an RGB run of this backbone feeds for the same images: file values in 0-1, then (x - 0.5) / 0.5
    mean, std = torch.tensor(norm.mean).view(1, -1, 1, 1), torch.tensor(norm.std).view(1, -1, 1, 1)
    scale = 65535.0
    as_rgb = {s: ((b[0] * std + mean)[:, :3] / scale - 0.5) / 0.5 for s, b in batches.items()}
    rows = []
    inputs = {"rgb-model on rgb": (rgb_weight, as_rgb)} | {
        name: (w, {s: b[0] for s, b in batches.items()}) for name, w in variants(rgb_weight).items()}
    for name, (weight, images) in inputs.items():
        start = time.perf_counter()
        conv = model.conv_stem
        conv.in_channels = weight.shape[1]
        conv.weight = torch.nn.Parameter(weight.clone())
        stem: dict[str, float] = {}
        feats = {}
        with torch.no_grad():
            for split, x in images.items():
                if split == "val":
                    pre = conv(x)
                    act = model.bn1(pre)
                    stem = {"input_std": [round(float(v), 3) for v in x.std(dim=(0, 2, 3))],
                            "conv_std": round(float(pre.std()), 3),
                            "relu6_zero": round(float((act <= 0).float().mean()), 3),
                            "relu6_six": round(float((act >= 6).float().mean()), 3)}
                feats[split] = model.forward_head(model.forward_features(x), pre_logits=True).numpy()
        y = {s: b[1].numpy() for s, b in batches.items()}
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(feats["train"], y["train"])
        p = clf.predict_proba(feats["val"])
        # the same probe with its regularisation chosen by 5-fold cross-validation on train: calibrated losses
        cv = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=np.logspace(-4, 2, 7), cv=5, max_iter=5000,
                                                                  scoring="neg_log_loss"))
        cv.fit(feats["train"], y["train"])
        q = cv.predict_proba(feats["val"])
        rows.append({"variant": name, "seed": seed, **stem, "probe_val_loss": round(float(log_loss(y["val"], p,
                     labels=[0, 1])), 4), "probe_val_accuracy": round(float((p.argmax(1) == y["val"]).mean()), 4),
                     "cv_probe_val_loss": round(float(log_loss(y["val"], q, labels=[0, 1])), 4),
                     "cv_probe_val_accuracy": round(float((q.argmax(1) == y["val"]).mean()), 4),
                     "val_images": int(len(y["val"])), "wall_s": round(time.perf_counter() - start, 1)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def photo_reference(size: int, count: int = 128) -> dict[str, Any] | None:
    """The RGB model's stem on real leaf photos (the PlantVillage subset) as an RGB run feeds them: natural images,
    the contrast the pretrained filters were trained for."""
    import torch
    from PIL import Image

    from plantpheno.models.bundled import bundled_state_dict

    root = Path(__file__).resolve().parents[2] / "shared" / "data" / "plantvillage-subset"
    paths = sorted(root.glob("*/*.jpg"))[::17][:count]
    if not paths:
        return None
    x = torch.stack([torch.from_numpy(np.asarray(Image.open(p).convert("RGB").resize((size, size)), np.float32))
                     for p in paths]).permute(0, 3, 1, 2) / 255
    x = (x - 0.5) / 0.5
    import timm

    model = timm.create_model("tf_efficientnet_lite0", num_classes=2).eval()
    model.conv_stem.weight.data.copy_(bundled_state_dict("tf_efficientnet_lite0")["conv_stem.weight"])
    for k in ("weight", "bias", "running_mean", "running_var"):
        getattr(model.bn1, k).data.copy_(bundled_state_dict("tf_efficientnet_lite0")[f"bn1.{k}"])
    with torch.no_grad():
        pre = model.conv_stem(x)
        act = model.bn1(pre)
    return {"images": len(paths), "input_std": [round(float(v), 3) for v in x.std(dim=(0, 2, 3))],
            "conv_std": round(float(pre.std()), 3), "relu6_zero": round(float((act <= 0).float().mean()), 3),
            "relu6_six": round(float((act >= 6).float().mean()), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=150)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--no-decoys", action="store_true", help="the set without its visible decoy spots "
                        "(writes adapter_diagnose_nodecoys.*)")
    args = parser.parse_args()
    from plantpheno.data.synth_bands import synthesize_multispectral

    info = machine()
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        data = synthesize_multispectral(Path(tmp) / "set", per_class=args.per_class, image_size=max(args.size, 32),
                                        decoys=not args.no_decoys)
        for seed in args.seeds:
            rows += measure(data, Path(tmp) / "runs", seed, args.size)
    photos = photo_reference(args.size)
    print(json.dumps({"photos": photos}), flush=True)
    wall = round(time.perf_counter() - started, 1)
    OUT.mkdir(exist_ok=True)
    stem = "adapter_diagnose_nodecoys" if args.no_decoys else "adapter_diagnose"  # the results files
    (OUT / f"{stem}.json").write_text(json.dumps({"args": vars(args), "machine": info, "wall_s": wall,
                                                           "photos": photos, "rows": rows}, indent=2) + "\n")
    title = "four standardised bands" + (", no decoys" if args.no_decoys else "")
    lines = [f"# First-layer diagnosis: bundled Lite0 on {title} ({info['measured_at']})", "",
             f"Machine: {describe(info)}", "",
             f"`python benchmarks/adapter_diagnose.py {' '.join(sys.argv[1:])}`: {args.per_class} per class, "
             f"{args.size} px, seeds {args.seeds}; validation split, no training. Total {wall} s.", "",
             "| variant | input std per band (seed 0) | stem conv output std | ReLU6 at 0 | ReLU6 at 6 | "
             "probe val loss (per seed) | probe val accuracy | CV probe val loss (per seed) | CV probe val accuracy |",
             "|---|---|---|---|---|---|---|---|---|"]
    if photos:
        lines.append(f"| rgb-model on {photos['images']} PlantVillage photos (RGB run's input) | "
                     f"{photos['input_std']} | {photos['conv_std']:.3f} | {photos['relu6_zero']:.3f} | "
                     f"{photos['relu6_six']:.3f} | - | - | - | - |")
    for name in dict.fromkeys(r["variant"] for r in rows):
        of = [r for r in rows if r["variant"] == name]
        mean = lambda k: float(np.mean([r[k] for r in of]))  # noqa: E731
        lines.append(f"| {name} | {of[0]['input_std']} | {mean('conv_std'):.3f} | {mean('relu6_zero'):.3f} | "
                     f"{mean('relu6_six'):.3f} | {mean('probe_val_loss'):.3f} "
                     f"({', '.join(str(r['probe_val_loss']) for r in of)}) | {mean('probe_val_accuracy'):.3f} | "
                     f"{mean('cv_probe_val_loss'):.3f} ({', '.join(str(r['cv_probe_val_loss']) for r in of)}) | "
                     f"{mean('cv_probe_val_accuracy'):.3f} |")
    (OUT / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
