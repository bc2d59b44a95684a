"""Prediction with a packaged model: from the registry (NAME@alias), a package folder, or a run directory."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from plantpheno.files.csvfile import csv_text
from plantpheno.data.images import (DEFAULT_MAX_PIXELS, TooLarge, load_rgb, rgb_from_array, rgb_from_bytes,
                                    to_rgb)
from plantpheno.data.band_input import BandCountError, BandInput
from plantpheno.data.bands import ARRAY_SUFFIXES, drop_band_files
from plantpheno.data.transforms import eval_transform
from plantpheno.errors import ArgumentError, DataError, short_repr
from plantpheno.evaluation.metrics import rounded_counts
from plantpheno.evaluation.tta import tta_outputs
from plantpheno.models import input_format, to_channels_last, wants_channels_last
from plantpheno.registry.package import ModelPackage

ImageInput = str | os.PathLike | bytes | Image.Image | np.ndarray
"""What prediction takes: a file path, encoded image bytes, a PIL image, or an array (channels last)."""
MAX_BATCH_SIZE = 65536  # as data.batch_size
UNKNOWN = "unknown"  # the label of an image the OOD detector flags, where the user asks for it
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class Predictor:
    """A model with its stored preprocessing, ready to predict on image files, bytes, PIL images or arrays."""

    def __init__(self, package: ModelPackage, *, device: str = "cpu",
                 max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
        from plantpheno.device import resolve_device

        self.package = package
        self.max_pixels = max_pixels  # every image, whatever its kind, is refused above this (as in training)
        self.device = resolve_device(device)  # auto: CUDA, then MPS, then CPU
        self.model = package.build_model().to(self.device)
        if wants_channels_last("auto", self.device, self.model):  # faster on CUDA and for BN CNNs on CPU
            to_channels_last(self.model)
        self.task = package.task
        m = package.meta
        self.image_size = m.image_size
        self.transform = eval_transform(m.image_size, list(m.mean), list(m.std), m.resize)
        self.bands = BandInput.of(m)  # None: an RGB model
        # fitted on the validation split when the run was evaluated; packages made before have neither
        self.temperature, self.tta = m.applied_temperature, m.applied_tta
        # the OOD detector fitted at the end of training (evaluation/ood.py); packages made before have none
        from plantpheno.evaluation.ood import OODDetector, describe_missing

        self.ood = OODDetector.load(package.folder)
        self.ood_note = None if self.ood is not None else describe_missing(str(package.folder))

    def predict_files(self, paths: Sequence[Path], *, batch_size: int = 32,
                      progress: bool = False) -> tuple[list[tuple[Path, torch.Tensor]], list[tuple[Path, str]]]:
        """Predictions (probabilities or trait value per image) and the files that could not be read."""
        results, bad = self.predict_images(paths, batch_size=batch_size, progress=progress)
        return [(paths[i], out) for i, out in results], [(paths[i], why) for i, why in bad]

    def predict_files_with_scores(self, paths: Sequence[Path], *, batch_size: int = 32, progress: bool = False
                                  ) -> tuple[list[tuple[Path, torch.Tensor]], list[tuple[Path, str]], list[float]]:
        """As :meth:`predict_files`, and the OOD score of each prediction, in order (empty without a detector)."""
        results, bad, scores = self.predict_with_scores(paths, batch_size=batch_size, progress=progress)
        return ([(paths[i], out) for i, out in results], [(paths[i], why) for i, why in bad],
                [scores[i] for i, _ in results] if scores else [])

    def predict_images(self, images: Sequence[ImageInput], *, batch_size: int = 32,
                       progress: bool = False) -> tuple[list[tuple[int, torch.Tensor]], list[tuple[int, str]]]:
        """Predictions for image files, encoded image bytes, PIL images or arrays (:func:`to_rgb_image`), by
        position in ``images``; and the positions that could not be read, with why."""
        results, bad, _ = self.predict_with_scores(images, batch_size=batch_size, progress=progress)
        return results, bad

    @torch.no_grad()
    def predict_with_scores(self, images: Sequence[ImageInput], *, batch_size: int = 32, progress: bool = False
                            ) -> tuple[list[tuple[int, torch.Tensor]], list[tuple[int, str]], dict[int, float]]:
        """As :meth:`predict_images`, and each image's OOD score by position (empty without a detector)."""
        from tqdm.auto import tqdm

        check_batch_size(batch_size)
        results: list[tuple[int, torch.Tensor]] = []
        bad: list[tuple[int, str]] = []
        scores: dict[int, float] = {}
        bar = tqdm(total=len(images), unit="img", disable=not progress, file=sys.stderr)
        for start in range(0, len(images), batch_size):
            indices, tensors = [], []
            for i in range(start, min(start + batch_size, len(images))):
                try:
                    tensors.append(self.bands(images[i], max_pixels=self.max_pixels) if self.bands is not None
                                   else self.transform(to_rgb_image(images[i], min_side=self.image_size,
                                                                    max_pixels=self.max_pixels)))
                    indices.append(i)
                except BandCountError:
                    raise  # the model's bands are not in these files: one message, not one per file
                except Exception as exc:  # noqa: BLE001 - any unreadable image is reported, not fatal
                    hint = _band_hint(images[i], self.max_pixels) if self.bands is None else ""
                    bad.append((i, f"{type(exc).__name__}: {exc}{hint}"))
            if tensors:
                batch = torch.stack(tensors).to(self.device).contiguous(memory_format=input_format(self.model))
                raw, ood_scores = self._forward(batch)
                if self.task.name == "classification":
                    raw = raw / self.temperature
                outputs = self.task.predictions(raw).cpu()
                results.extend(zip(indices, outputs))
                if ood_scores is not None:
                    scores.update(zip(indices, ood_scores.tolist()))
            bar.update(min(batch_size, len(images) - start))
        bar.close()
        return results, bad, scores

    def _forward(self, batch: torch.Tensor) -> tuple[torch.Tensor, np.ndarray | None]:
        """The raw outputs (TTA-averaged) and the OOD scores; the scores take the image as it is (no TTA), as
        their threshold was fitted, and the feature scores the pooled features of the same pass."""
        if self.ood is None:
            return tta_outputs(self.model, batch, self.tta)[0], None
        from plantpheno.evaluation.one_pass import feature_parts, outputs_and_features
        from plantpheno.training.features import pooled_features

        # one pass: the identity view gives the logits and the pooled features (evaluation.one_pass)
        parts = feature_parts(self.model) if self.ood.needs_features else None
        raw, plain, features = outputs_and_features(self.model, batch, self.tta, parts)
        if self.ood.needs_features and features is None:  # a head that is not one module: a second pass
            features = pooled_features(self.model)(batch).float()
        scores = self.ood.scores(logits=plain.cpu().numpy(),
                                 features=features.cpu().numpy() if features is not None else None)
        return raw, scores

    def describe(self, output: torch.Tensor, ood_score: float | None = None, *,
                 unknown_label: bool = False) -> dict[str, Any]:
        """One prediction as plain values: ``predicted`` (class name), ``confidence`` and ``probabilities``
        (class -> probability), or ``predicted`` (the trait value in its own units); with a detector also
        ``ood_score`` and ``unknown`` (and, with ``unknown_label``, ``predicted`` = ``unknown`` for a flagged
        image of a classifier)."""
        names = self.package.meta.class_names
        out: dict[str, Any]
        if not names:
            out = {"predicted": float(output)}
        else:
            probs = output.tolist()
            k = int(output.argmax())
            out = {"predicted": names[k], "confidence": probs[k], "probabilities": dict(zip(names, probs))}
        if self.ood is not None and ood_score is not None:
            out["ood_score"] = float(ood_score)
            out["unknown"] = bool(self.ood.unknown(np.array([ood_score]))[0])
            if unknown_label and out["unknown"] and names:
                out["predicted"] = UNKNOWN
        return out

    def to_csv(self, results: Iterable[tuple[Path, torch.Tensor]], ood_scores: Sequence[float] | None = None, *,
               unknown_label: bool = False) -> str:
        """``path,predicted,confidence,p_<class>...`` (classes), ``path,predicted`` (traits) or
        ``path,predicted,predicted_count`` (counts: the value rounded as the count metrics round it); with a
        detector and ``ood_scores`` (one per result) also ``ood_score,unknown`` at the end of each row, and with
        ``unknown_label`` a flagged image's class is ``unknown``."""
        names = self.package.meta.class_names
        found = list(results)
        rows: list[list[object]] = []
        if names:
            rows.append(["path", "predicted", "confidence", *(f"p_{n}" for n in names)])
            for path, probs in found:
                k = int(probs.argmax())
                rows.append([str(path), names[k], f"{probs[k]:.6f}", *(f"{p:.6f}" for p in probs.tolist())])
        elif getattr(self.task, "counts", False):
            counts = rounded_counts(np.array([float(value) for _, value in found]))
            rows.append(["path", "predicted", "predicted_count"])
            rows += [[str(path), f"{float(value):.6f}", str(c)] for (path, value), c in zip(found, counts)]
        else:
            rows.append(["path", "predicted"])
            rows += [[str(path), f"{float(value):.6f}"] for path, value in found]
        if self.ood is not None and ood_scores is not None:
            flags = self.ood.unknown(np.asarray(ood_scores, dtype=float))
            rows[0] += ["ood_score", "unknown"]
            for row, score, flag in zip(rows[1:], ood_scores, flags):
                row += [f"{score:.6f}", "true" if flag else "false"]
                if unknown_label and flag and names:
                    row[1] = UNKNOWN
        return csv_text(rows)


def to_rgb_image(item: ImageInput, *, min_side: int | None = None,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """An image file (path), encoded image bytes, a PIL image or an array (channels last) as 8-bit RGB, decoded
    exactly as training decoded its files (EXIF orientation, grey/palette/alpha/16-bit converted). Every kind is
    held to the same pixel limit as training's files (``max_pixels``, refused before decoding); a FIFO or other
    non-regular file and an array with NaN or infinite values are refused. With ``min_side`` (the side the model
    resizes to) a large JPEG is decoded at a reduced scale that keeps at least twice that."""
    if isinstance(item, Image.Image):
        if max_pixels is not None and item.width * item.height > max_pixels:
            raise TooLarge(item.width, item.height, max_pixels)
        return to_rgb(item)
    if isinstance(item, (bytes, bytearray, memoryview)):
        return rgb_from_bytes(bytes(item), max_pixels=max_pixels, min_side=min_side)
    if isinstance(item, (str, os.PathLike)):
        return load_rgb(item, min_side=min_side, max_pixels=max_pixels)
    if isinstance(item, np.ndarray):
        return rgb_from_array(item, max_pixels=max_pixels)
    raise DataError(f"cannot read an image from a {type(item).__name__}: expected a path, encoded image bytes, a "
                    f"PIL image or a numpy array (H, W[, C])")


def _band_hint(item: ImageInput, max_pixels: int | None) -> str:
    """Why an RGB model could not read an image that holds other bands (a multi-band TIFF or an array file), or
    nothing: such a file is read only here, after the RGB decoder failed on it."""
    if not isinstance(item, (str, os.PathLike, bytes, bytearray, memoryview)):
        return ""
    from plantpheno.data.bands import read_raw

    try:
        raw = read_raw(item, max_pixels=max_pixels)
    except Exception:  # noqa: BLE001 - not a band file either: the decoder's own reason stands
        return ""
    if raw.dtype == np.uint8 and raw.shape[2] in (1, 3, 4):  # an 8-bit grey/RGB(A) image, damaged: not a band file
        return ""
    return (f" (it holds {raw.shape[2]} band(s) of {raw.dtype}; this model reads RGB images: it was trained "
            f"without data.bands)")


def check_batch_size(batch_size: object) -> int:
    """``batch_size`` as given, if it is an integer from 1 to ``MAX_BATCH_SIZE`` (as data.batch_size)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ArgumentError(f"batch_size: got {short_repr(batch_size)}; expected an integer from 1 to "
                            f"{MAX_BATCH_SIZE:,}")
    return batch_size


def collect_images(inputs: Sequence[Path], *, bands: BandInput | None = None, arrays: bool = False) -> list[Path]:
    """Files as given, and every image file under given folders (hidden files and folders skipped). For a model
    of ``data.bands`` (``bands``) a folder's ``.npy``/``.npz`` arrays count too, and a file that is the band file
    (by its pattern) of another one found there is not an image of its own. ``arrays``: arrays too, whatever the
    model."""
    extensions = IMAGE_EXTENSIONS + (ARRAY_SUFFIXES if bands is not None or arrays else ())
    found: list[Path] = []
    for item in inputs:
        if item.is_dir():
            listed = sorted(p for p in item.rglob("*") if p.suffix.lower() in extensions and p.is_file()
                            and not any(part.startswith(".") for part in p.relative_to(item).parts))
            found.extend(drop_band_files(listed, bands.bands) if bands is not None else listed)
        elif item.exists():
            found.append(item)
        else:
            raise DataError(f"{item} does not exist")
    if not found:
        raise DataError(f"no image files found in {', '.join(map(str, inputs))}")
    return found
