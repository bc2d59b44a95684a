"""Export to ONNX or TorchScript, with a parity check against the PyTorch model.

The exported graph takes square RGB images in [0, 1] (N, 3, S, S), made as the package's ``resize`` says
(``crop``: shorter side to S and the centre square; ``pad``: longer side to S, letterboxed with the colour
``pad_fill``; ``stretch``: S x S), and contains the normalisation and the output conversion (softmax
probabilities, or the trait in its own units), so a deployment only has to resize. That preprocessing is
written into the file (ONNX metadata ``plantpheno.preprocessing``, a TorchScript extra file
``plantpheno_preprocessing.json``). The parity check runs the exported file and the PyTorch reference on
the same images (the package's stored test images, preprocessed that way, else seeded random ones) and fails
loudly when the outputs differ beyond the tolerance. A model of ``data.bands`` takes ``(N, C, S, S)``, its bands in
the file's own units, and contains the per-band clip and standardisation (:mod:`plantpheno.registry.band_export`;
the band names and scaling are in the same metadata).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from plantpheno.files.atomic import check_output_path, replace_with_checksum, storage_error
from plantpheno.errors import ExportError
from plantpheno.evaluation.ood import OODDetector
from plantpheno.evaluation.tta import TTAModel
from plantpheno.registry import ood_export
from plantpheno.registry.band_export import band_scaling
from plantpheno.registry.package import ModelPackage, preprocessing
from plantpheno.reporting import Reporter, default_reporter

Format = Literal["onnx", "torchscript"]
TOLERANCE = 1e-4  # max |difference| in probabilities (or in standardised trait units)
PREPROCESSING_KEY = "plantpheno.preprocessing"  # ONNX metadata: the preprocessing the graph expects, as JSON
PREPROCESSING_FILE = "plantpheno_preprocessing.json"  # the same, as a TorchScript extra file
_FORMAT_NAMES = {"onnx": "ONNX", "torchscript": "TorchScript"}


class DeployableModel(nn.Module):
    """Normalisation + network (averaged over the package's TTA views) + output conversion (softmax of the
    logits divided by the package's temperature, or the trait rescaling), as one module; with an OOD detector
    also the ``ood_score`` and ``unknown`` outputs (:mod:`plantpheno.registry.ood_export`)."""

    def __init__(self, model: nn.Module, package: ModelPackage, *, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, ood: OODDetector | None = None) -> None:
        super().__init__()
        m = package.meta
        tta = m.applied_tta
        outputs = model if tta == "none" else TTAModel(model, tta)
        self.with_ood = ood is not None
        self.model = outputs if ood is None else ood_export.WithOOD(model, outputs, ood)
        self.temperature = m.applied_temperature
        # a model of data.bands: per-band clip + standardisation of the bands in their own units (band_export.py)
        scaling = band_scaling(m) if m.band_names else None
        self.clip = scaling is not None
        channels = len(m.band_names or "rgb")
        default_mean = scaling["mean"] if scaling is not None else list(m.mean)
        default_std = scaling["std"] if scaling is not None else list(m.std)
        for name, given, default in (("mean", mean, default_mean), ("std", std, default_std)):
            value = torch.as_tensor(given if given is not None else default, dtype=torch.float32)
            self.register_buffer(name, value.reshape(1, channels, 1, 1))
        if scaling is not None:
            self.register_buffer("low", scaling["low"])
            self.register_buffer("high", scaling["high"])
        self.classification = m.is_classification
        self.target_mean = float(m.target_mean or 0.0)
        self.target_std = float(m.target_std or 1.0)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """What the network takes: (clipped bands,) standardised."""
        if self.clip:
            images = torch.minimum(torch.maximum(images, self.low), self.high)
        return (images - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not self.with_ood:
            return self._convert(self.model(self.normalise(images)))
        out, score, unknown = self.model(self.normalise(images))
        return self._convert(out), score, unknown

    def _convert(self, out: torch.Tensor) -> torch.Tensor:
        if self.classification:
            return (out / self.temperature).softmax(dim=1)
        return out[:, 0] * self.target_std + self.target_mean


@dataclass(frozen=True)
class ExportReport:
    path: Path
    format: str
    max_abs_diff: float
    top1_agreement: float | None
    num_images: int
    tolerance: float
    ood: str = ""  # the line about the ood_score/unknown outputs, or that the package has no OOD threshold
    ood_score_diff: float | None = None  # max |difference| of ood_score vs ood.py, scaled by max(1, |score|)

    def summary(self) -> str:
        agree = f", top-1 agreement {self.top1_agreement:.1%}" if self.top1_agreement is not None else ""
        return (f"{self.format} export {self.path}: max |difference| vs PyTorch {self.max_abs_diff:.2e} "
                f"(tolerance {self.tolerance:.0e}) on {self.num_images} images{agree}"
                + (f"\n{self.ood}" if self.ood else ""))


def export_package(package: ModelPackage, fmt: Format, out: Path, *, tolerance: float = TOLERANCE,
                   mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                   reporter: Reporter | None = None) -> ExportReport:
    """Export, check parity, and only then move the file to ``out`` (a failed export leaves nothing).

    ``mean``/``std`` replace the stored normalisation in the exported graph (for testing that the check
    catches a broken export); the reference always uses the package's own. ``reporter`` hears a line per step
    (an ONNX export takes about a minute on a CPU).
    """
    reporter = default_reporter(reporter)
    if isinstance(tolerance, bool) or not isinstance(tolerance, int | float) or not math.isfinite(tolerance) \
            or tolerance < 0:
        raise ExportError(f"tolerance must be a finite number >= 0, got {tolerance!r} (the parity check compares "
                          f"the largest |difference| against it)")
    check_output_path(out, inputs=_inputs(package), what="the export")
    detector = OODDetector.load(package.folder)
    images = _check_images(package, with_random=detector is not None)
    reference = DeployableModel(package.build_model(), package, ood=detector).eval()
    exported_module = DeployableModel(package.build_model(), package, mean=mean, std=std, ood=detector).eval()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    except OSError as exc:
        raise storage_error(exc, out, existed=out.exists()) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        notes = {"preprocessing": json.dumps(preprocessing(package.meta))}
        if detector is not None:
            notes["ood"] = json.dumps(ood_export.metadata(detector))
        reporter.info(f"exporting {package.meta.backbone} to {_FORMAT_NAMES[fmt]} ("
                      + ("torch.onnx with the dynamo exporter, about a minute on a CPU" if fmt == "onnx"
                         else "tracing") + f"), then checking it against the PyTorch model on {len(images)} images")
        run = _export_onnx(exported_module, images, tmp, notes) if fmt == "onnx" else _export_torchscript(
            exported_module, images, tmp, notes)
        reporter.info(f"checking the {_FORMAT_NAMES[fmt]} file against the PyTorch model (tolerance {tolerance:.0e})")
        report = _compare(_expected(reference, detector, images), run(images.numpy()), out, fmt, tolerance, package,
                          detector)
        if detector is None:
            report = replace(report, ood=ood_export.missing_line(str(package.folder), _FORMAT_NAMES[fmt]))
        replace_with_checksum(tmp, out)  # OUT.sha256 beside it, as every weights file plantpheno writes
        return report
    finally:
        tmp.unlink(missing_ok=True)


@torch.no_grad()
def _expected(reference: DeployableModel, detector: OODDetector | None, images: torch.Tensor) -> list[np.ndarray]:
    """The parity check's reference: the PyTorch model's outputs and, with a detector, ``ood.py``'s own score and
    flag of the same pass (not the graph's torch arithmetic run eagerly, which the check is there to test)."""
    if detector is None:
        return [reference(images).numpy()]
    assert isinstance(reference.model, ood_export.WithOOD)
    scores, flags = ood_export.reference(reference.model, detector, reference.normalise(images))
    return [reference(images)[0].numpy(), scores, flags]


def _inputs(package: ModelPackage) -> list[Path]:
    """The files an export must never overwrite: the package's, and its run's own files and checkpoints."""
    files = [p for p in package.folder.rglob("*") if p.is_file()]
    run = Path(str(package.meta.source_run_dir or ""))
    if run.is_absolute() and run.is_dir():
        files += [*run.glob("*"), *run.glob("checkpoints/*")]
    return files


def _check_images(package: ModelPackage, *, with_random: bool = False) -> torch.Tensor:
    """The stored test images, else 4 seeded random ones; ``with_random`` (a package with an OOD detector): the
    random ones too, which the detector mostly flags, so that the check sees ``unknown`` both ways."""
    images = package.sample_inputs()
    if images is None or with_random:
        size, m = package.meta.image_size, package.meta
        channels = len(m.band_names or "rgb")
        noise = torch.rand(4, channels, size, size, generator=torch.Generator().manual_seed(0))
        if m.band_names:  # uniform within each band's clipping range, in the band's own units
            scaling = band_scaling(m)
            noise = scaling["low"] + noise * (scaling["high"] - scaling["low"])
        images = noise if images is None else torch.cat([images.float(), noise])
    return images.float()


def _export_torchscript(module: nn.Module, images: torch.Tensor, path: Path, notes: dict[str, str]):
    import warnings

    extra = {PREPROCESSING_FILE: notes["preprocessing"], **({ood_export.OOD_FILE: notes["ood"]} if "ood" in notes
                                                              else {})}
    with torch.no_grad(), warnings.catch_warnings():
        # TorchScript is deprecated upstream but still what many C++/mobile deployments load
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(module, images[:1])
        traced.save(str(path), _extra_files=extra)
        loaded = torch.jit.load(str(path))

    def run(x: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            out = loaded(torch.from_numpy(x))
        return [t.numpy() for t in (out if isinstance(out, tuple | list) else [out])]

    return run


def _export_onnx(module: nn.Module, images: torch.Tensor, path: Path, notes: dict[str, str]):
    try:
        import onnx
        import onnxruntime as ort
    except ImportError as exc:
        raise ExportError(f"ONNX export needs onnx and onnxruntime ({exc}): pip install 'plantpheno[export]'") from None
    batch = torch.export.Dim("batch", min=1, max=1024)
    names = ["outputs", *(ood_export.OUTPUTS if "ood" in notes else ())]
    torch.onnx.export(module, (images[:1],), str(path), input_names=["images"], output_names=names,
                      dynamic_shapes={"images": {0: batch}}, dynamo=True, external_data=False)
    graph = onnx.load(str(path))
    for key, value in ((PREPROCESSING_KEY, notes["preprocessing"]), (ood_export.OOD_KEY, notes.get("ood"))):
        if value is not None:
            entry = graph.metadata_props.add()  # beside the exporter's own properties
            entry.key, entry.value = key, value
    onnx.save(graph, str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(x: np.ndarray) -> list[np.ndarray]:
        return session.run(None, {"images": x.astype(np.float32)})

    return run


def _compare(expected_all: list[np.ndarray], actual_all: list[np.ndarray], out: Path, fmt: str, tolerance: float,
             package: ModelPackage, detector: OODDetector | None = None) -> ExportReport:
    """The exported outputs against the reference: the probabilities (or trait) within ``tolerance``, and with a
    detector ``ood_score``/``unknown`` against ``ood.py``'s (:func:`ood_export.compare`)."""
    if len(actual_all) != len(expected_all):
        raise ExportError(f"{fmt} export has {len(actual_all)} outputs, expected {len(expected_all)}")
    expected, actual = expected_all[0], actual_all[0]
    if expected.shape != actual.shape:
        raise ExportError(f"{fmt} export output shape {actual.shape} differs from PyTorch's {expected.shape}")
    diff = float(np.max(np.abs(expected - actual)))
    agreement = None
    if package.meta.is_classification:
        agreement = float(np.mean(expected.argmax(axis=1) == actual.argmax(axis=1)))
    report = ExportReport(out, fmt, diff, agreement, len(expected), tolerance)
    if not np.isfinite(diff) or diff > tolerance:
        raise ExportError(f"parity check failed: {report.summary()}; the export was not written")
    if detector is None:
        return report
    score_diff, near, failed = ood_export.compare((expected_all[1], expected_all[2]), (actual_all[1], actual_all[2]),
                                                  detector.threshold, tolerance)
    flagged = int(np.sum(expected_all[2]))
    line = (f"outputs ood_score and unknown: {detector.score}, unknown when ood_score > {detector.threshold:.6g}; "
            f"ood_score max |difference| vs plantpheno {score_diff:.2e} (scaled by max(1, |score|)), unknown "
            f"{flagged} of {len(expected)} as predict flags them" + (f" ({near} within tolerance of the threshold)"
                                                                     if near else ""))
    if failed is not None:
        raise ExportError(f"parity check failed: {fmt} export {out}: {failed}; the export was not written")
    return replace(report, ood=line, ood_score_diff=score_diff)
