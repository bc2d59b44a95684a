"""Prediction with a packaged model: from the registry (NAME@alias), a package folder, or a run directory."""

from __future__ import annotations

import csv
import io
import sys
import tempfile
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import torch

from plantpheno.data.images import load_rgb
from plantpheno.data.transforms import eval_transform
from plantpheno.errors import DataError
from plantpheno.evaluation.metrics import rounded_counts
from plantpheno.models import input_format, to_channels_last, wants_channels_last
from plantpheno.registry.package import ModelPackage

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class Predictor:
    """A model with its stored preprocessing, ready to predict on image files."""

    def __init__(self, package: ModelPackage, *, device: str = "cpu") -> None:
        self.package = package
        self.device = torch.device(device)
        self.model = package.build_model().to(self.device)
        if wants_channels_last("auto", self.device, self.model):  # faster on CUDA and for BN CNNs on CPU
            to_channels_last(self.model)
        self.task = package.task
        m = package.meta
        # packages from before data.resize existed were all centre-cropped
        self.transform = eval_transform(int(m["image_size"]), m["mean"], m["std"], m.get("resize", "crop"))

    @torch.no_grad()
    def predict_files(self, paths: Sequence[Path], *, batch_size: int = 32,
                      progress: bool = False) -> tuple[list[tuple[Path, torch.Tensor]], list[tuple[Path, str]]]:
        """Predictions (probabilities or trait value per image) and the files that could not be read."""
        from tqdm.auto import tqdm

        results, bad = [], []
        bar = tqdm(total=len(paths), unit="img", disable=not progress, file=sys.stderr)
        for start in range(0, len(paths), batch_size):
            batch_paths, tensors = [], []
            for path in paths[start:start + batch_size]:
                try:
                    tensors.append(self.transform(load_rgb(path)))
                    batch_paths.append(path)
                except Exception as exc:  # noqa: BLE001 - any unreadable file is reported, not fatal
                    bad.append((path, f"{type(exc).__name__}: {exc}"))
            if tensors:
                batch = torch.stack(tensors).to(self.device).contiguous(memory_format=input_format(self.model))
                outputs = self.task.predictions(self.model(batch)).cpu()
                results.extend(zip(batch_paths, outputs))
            bar.update(len(paths[start:start + batch_size]))
        bar.close()
        return results, bad

    def to_csv(self, results: Iterable[tuple[Path, torch.Tensor]]) -> str:
        """``path,predicted,confidence,p_<class>...`` (classes), ``path,predicted`` (traits) or
        ``path,predicted,predicted_count`` (counts: the value rounded as the count metrics round it)."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        names = self.package.meta.get("class_names")
        if names:
            writer.writerow(["path", "predicted", "confidence", *(f"p_{n}" for n in names)])
            for path, probs in results:
                k = int(probs.argmax())
                writer.writerow([str(path), names[k], f"{probs[k]:.6f}", *(f"{p:.6f}" for p in probs.tolist())])
        elif getattr(self.task, "counts", False):
            rows = list(results)
            counts = rounded_counts(np.array([float(value) for _, value in rows]))
            writer.writerow(["path", "predicted", "predicted_count"])
            writer.writerows([str(path), f"{float(value):.6f}", str(c)] for (path, value), c in zip(rows, counts))
        else:
            writer.writerow(["path", "predicted"])
            writer.writerows([str(path), f"{float(value):.6f}"] for path, value in results)
        return buf.getvalue()


def collect_images(inputs: Sequence[Path]) -> list[Path]:
    """Files as given, and every image file under given folders (hidden files and folders skipped)."""
    found: list[Path] = []
    for item in inputs:
        if item.is_dir():
            found.extend(sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                                and not any(part.startswith(".") for part in p.relative_to(item).parts)))
        elif item.exists():
            found.append(item)
        else:
            raise DataError(f"{item} does not exist")
    if not found:
        raise DataError(f"no image files found in {', '.join(map(str, inputs))}")
    return found


def open_model(source: str, stack: ExitStack, *, registry_uri: str | None = None) -> ModelPackage:
    """A run directory, a package folder, or a registry reference (NAME, NAME@alias, NAME/version)."""
    from plantpheno.registry.package import package_run
    from plantpheno.registry.refs import parse_ref
    from plantpheno.registry.store import ModelRegistry, default_registry_uri
    from plantpheno.rundir import RunDir

    path = Path(source)
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="plantpheno-model-")))
    if RunDir(path).config.is_file():
        return package_run(path, tmp / "model")
    if path.is_dir():
        return ModelPackage.open(path)
    return ModelRegistry(registry_uri or default_registry_uri()).download(parse_ref(source), tmp)
