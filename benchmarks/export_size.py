"""How much an OOD detector adds to an ONNX export (registry/ood_export.py): file sizes with and without it.

    nice -n 15 python benchmarks/export_size.py            # ~2-4 min on 2 CPU cores

Each row exports, with plantpheno's own ONNX routine (``registry.export._export_onnx``: dynamo exporter, one file,
the metadata written), a network alone and the same network with a detector fitted on seeded random features of
the network's width (a real ``fit_detector``: the sizes depend on the shapes only): the tiny test fixture
(``test_resnet``, the 44 training images of the 4-class synthetic set), and the ``classify`` recipe's
``tf_efficientnet_lite0`` with the PlantVillage subset's 1,570 training images and with the bank's cap (5,000 rows,
``evaluation.ood.max_train_features``: any larger data set) for energy+knn (the default) and mahalanobis (its
``D x D`` float64 precision). Sizes are ratios against the network alone, measured side by side in one run.
Results: ``benchmarks/results/export_size.{json,md}`` with the machine.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO / "benchmarks")]

from machine import describe, machine  # noqa: E402

from plantpheno.evaluation.ood import fit_detector  # noqa: E402
from plantpheno.registry import ood_export  # noqa: E402
from plantpheno.registry.export import _export_onnx  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
# (label, backbone, classes, image size, [(score, bank rows)])
CASES = [("tiny fixture", "test_resnet", 4, 32, [("energy+knn", 44)]),
         ("classify recipe, PlantVillage subset", "tf_efficientnet_lite0", 15, 224,
          [("energy+knn", 1570), ("energy+knn", 5000), ("mahalanobis", 5000)])]


class Graph(nn.Module):
    """What the export wraps (its input is named ``images``): the network alone, or with its OOD outputs."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, images: torch.Tensor):
        return self.inner(images)


def _detector(score: str, rows: int, width: int, classes: int):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, classes, rows)
    return fit_detector(score, keep=0.95, train_features=rng.normal(size=(rows, width)).astype(np.float32),
                        train_labels=labels, val_features=rng.normal(size=(50, width)).astype(np.float32),
                        val_logits=rng.normal(size=(50, classes)), k=1, max_train_features=5000)


def _size(module: nn.Module, size: int, notes: dict[str, str]) -> tuple[int, float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        start = time.perf_counter()
        _export_onnx(module.eval(), torch.rand(1, 3, size, size), path, notes)
        return path.stat().st_size, time.perf_counter() - start


def main() -> None:
    import timm

    torch.manual_seed(0)
    rows_out = []
    for label, backbone, classes, size, detectors in CASES:
        net = timm.create_model(backbone, pretrained=False, num_classes=classes).eval()
        width = net.num_features
        base, seconds = _size(Graph(net), size, {"preprocessing": "{}"})
        rows_out.append({"case": label, "backbone": backbone, "width": width, "score": None, "bank_rows": 0,
                         "bytes": base, "ratio": 1.0, "export_s": round(seconds, 1)})
        for score, rows in detectors:
            detector = _detector(score, rows, width, classes)
            module = ood_export.WithOOD(net, net, detector)
            notes = {"preprocessing": "{}", "ood": json.dumps(ood_export.metadata(detector))}
            got, seconds = _size(Graph(module), size, notes)
            rows_out.append({"case": label, "backbone": backbone, "width": width, "score": score, "bank_rows": rows,
                             "bytes": got, "ratio": round(got / base, 3), "export_s": round(seconds, 1)})
            print(rows_out[-1], flush=True)
    info = machine()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "export_size.json").write_text(json.dumps({"rows": rows_out, "machine": info}, indent=2) + "\n")
    lines = ["# ONNX file size with the OOD detector in the graph", "",
             f"`nice -n 15 python benchmarks/export_size.py`; {describe(info)}", "",
             "| case | backbone (width) | detector | bank rows | file | vs network alone |",
             "|---|---|---|---|---|---|"]
    for r in rows_out:
        lines.append(f"| {r['case']} | {r['backbone']} ({r['width']}) | {r['score'] or 'none'} | {r['bank_rows']} | "
                     f"{r['bytes'] / 1e6:.2f} MB | {r['ratio']:.2f}x |")
    (RESULTS / "export_size.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
