"""A model package: everything needed to use a trained model without its training config or code.

Folder layout (also what a registry version stores):
  plantpheno_model.json   backbone, task, class names / trait scaling, preprocessing, lineage
  model.safetensors       weights (loading never unpickles code)
  sample_inputs.safetensors  a few preprocessed test images (export parity checks)
  MODEL_CARD.md, config.yaml, metrics.json, dataset.json
  ood.json, ood_features.npz  the OOD detector and its training features (models trained before have neither)
  band_importance.json    a band model's drop in the validation headline per band (RGB and older models: none)
  NAME.sha256             the SHA-256 of each file above (files/atomic.py), checked before the file is used
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plantpheno.files.atomic import atomic_copy, atomic_write_bytes, atomic_write_text, verify_checksum
from plantpheno.errors import ModelError, RegistryError, RunDirError, clip
from plantpheno.records.evaluation import Evaluation, read_evaluation
from plantpheno.records.model_meta import ModelMeta, read_meta
from plantpheno.run.folder import BAND_IMPORTANCE, RunDir
from plantpheno.tasks import task_metrics

META_FILE = "plantpheno_model.json"
WEIGHTS_FILE = "model.safetensors"
SAMPLES_FILE = "sample_inputs.safetensors"
CARD_FILE = "MODEL_CARD.md"
MLMODEL_FILE = "MLmodel"  # an MLflow model folder's description (registry/pyfunc.py writes one per version)
PYFUNC_ARTIFACT = "package"  # the pyfunc artifact that holds the package: MLMODEL_DIR/artifacts/package/
FORMAT = "plantpheno-model/1"
REMEDY = ("Register the run again (plantpheno models register RUN_DIR --name NAME) or use another version; a "
          "package folder: package the run again.")
NUM_SAMPLES = 4

if TYPE_CHECKING:  # torch is imported where it is used: reading a package's files (``models show``) needs none
    import torch
    from torch import nn


@dataclass(frozen=True)
class ModelPackage:
    """A model package folder, read and validated."""

    folder: Path
    meta: ModelMeta

    @classmethod
    def open(cls, folder: Path) -> ModelPackage:
        """Open a package folder, or the package inside an MLflow model folder that registration wrote
        (``registry/pyfunc.py``: ``MLmodel`` + ``artifacts/package/``)."""
        folder = inside_mlflow_model(Path(folder))
        path = folder / META_FILE
        if not path.is_file() or not (folder / WEIGHTS_FILE).is_file():
            raise RegistryError(f"{folder} is not a plantpheno model package (needs {META_FILE} and {WEIGHTS_FILE})")
        verify_checksum(path, remedy=REMEDY)
        return cls(folder, read_meta(path, expected_format=FORMAT))

    @property
    def task(self):
        """The task adapter that turns outputs into probabilities or trait values."""
        from plantpheno.training.objectives import task_from_meta

        return task_from_meta(self.meta)

    def build_model(self) -> nn.Module:
        """The network with its weights, in eval mode (no pretrained download, strict load)."""
        import timm
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        backbone, weights = self.meta.backbone, self.folder / WEIGHTS_FILE
        if not timm.is_model(backbone):
            raise ModelError(f"{self.folder / META_FILE}: backbone {backbone!r} is not a timm model (timm "
                             f"{timm.__version__}); the package is damaged, or needs another timm version")
        bands = self.meta.band_names  # a model of data.bands: its first layer takes N bands
        model = timm.create_model(backbone, pretrained=False, num_classes=self.meta.num_outputs,
                                  **({"in_chans": len(bands)} if bands else {}))
        verify_checksum(weights, remedy=REMEDY)
        try:
            state = load_file(str(weights))
        except (SafetensorError, OSError) as exc:
            raise ModelError(f"{weights} cannot be read as safetensors weights ({exc}); the file is truncated or "
                             f"damaged: register the run again") from None
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:  # missing, unexpected or misshapen tensors
            raise ModelError(f"{weights} does not hold the weights of a {backbone} with {self.meta.num_outputs} "
                             f"output(s): {clip(str(exc), 600)}") from None
        return model.eval()

    def sample_inputs(self) -> torch.Tensor | None:
        """Preprocessed but unnormalised sample images, if stored: ``(N, 3, S, S)`` in [0, 1], or for a model of
        ``data.bands`` ``(N, C, S, S)`` in the bands' own units (registry/band_export.py)."""
        from safetensors.torch import load_file

        path = self.folder / SAMPLES_FILE
        if not path.is_file():
            return None
        verify_checksum(path, remedy=REMEDY)
        return load_file(str(path))["images"]

    def band_importance(self) -> dict[str, Any] | None:
        """The run's ``band_importance.json`` (evaluation/band_importance.py), checked against its checksum; None
        for an RGB model or one packaged before packages kept it."""
        path = self.folder / BAND_IMPORTANCE
        if not path.is_file():
            return None
        verify_checksum(path, remedy=REMEDY)
        return json.loads(path.read_text(encoding="utf-8"))


def inside_mlflow_model(folder: Path) -> Path:
    """The package folder of an MLflow pyfunc model folder (named by its ``MLmodel`` file); any other folder
    as it is (a plain package, such as versions registered before registration wrote MLflow models)."""
    if (folder / META_FILE).is_file() or not (folder / MLMODEL_FILE).is_file():
        return folder
    import yaml

    try:
        flavor = yaml.safe_load((folder / MLMODEL_FILE).read_text(encoding="utf-8"))["flavors"]["python_function"]
        relative = flavor["artifacts"][PYFUNC_ARTIFACT]["path"]
    except (yaml.YAMLError, KeyError, TypeError):
        raise RegistryError(f"{folder} is an MLflow model but not a plantpheno one (its {MLMODEL_FILE} names no "
                            f"'{PYFUNC_ARTIFACT}' artifact of the python_function flavor)") from None
    inner = (folder / relative).resolve()
    if not inner.is_relative_to(folder.resolve()):
        raise RegistryError(f"{folder / MLMODEL_FILE}: artifact path {relative!r} points outside the model folder")
    return inner


def package_run(run_dir: Path, out: Path) -> ModelPackage:
    """Write the package of a run's best checkpoint (its last, if it has no best) into ``out``."""
    from safetensors.torch import save

    from plantpheno.training.checkpoint import load_checkpoint

    run = RunDir.of(run_dir)
    path = run.checkpoint_to_use()
    if path is None:
        raise RunDirError(f"{run.path} has no checkpoint to register (expected {run.best_checkpoint})")
    checkpoint = load_checkpoint(path)
    if path != run.best_checkpoint:
        logging.getLogger("plantpheno").warning("%s is missing: packaging %s instead (epoch %s, the last one saved, "
                                                "which may not be the best)", run.best_checkpoint, path.name,
                                                checkpoint["state"]["epoch"])
    out.mkdir(parents=True, exist_ok=True)
    weights = save({k: v.contiguous() for k, v in checkpoint["model"].items()})
    atomic_write_bytes(out / WEIGHTS_FILE, weights, checksum=True)
    for source in (run.config, run.dataset_info, run.environment, run.temperature, run.band_importance):
        if source.is_file():
            atomic_copy(source, out / source.name, checksum=True)
    _copy_ood(run, out)
    evaluation = read_evaluation(run.eval("test").metrics) if run.eval("test").metrics.is_file() else None
    if evaluation is not None:
        atomic_write_text(out / "metrics.json", evaluation.to_json(), checksum=True)
    meta = _package_meta(run, checkpoint, path, evaluation)
    atomic_write_text(out / META_FILE, meta.to_json(), checksum=True)
    _write_samples(run, meta, out / SAMPLES_FILE)
    package = ModelPackage(out, meta)
    from plantpheno.registry.card import model_card

    atomic_write_text(out / CARD_FILE, model_card(package, run=run), checksum=True)
    return package


def _copy_ood(run: RunDir, out: Path) -> None:
    """The run's OOD detector (evaluation/ood.py), checked, as its own files beside the weights: not in the
    metadata, so a model without one (trained before plantpheno fitted one) is told apart by their absence."""
    from plantpheno.evaluation.ood import DETECTOR_FILE, FEATURES_FILE

    for name in (DETECTOR_FILE, FEATURES_FILE):
        source = run.path / name
        if source.is_file():
            verify_checksum(source, remedy="train the run again to refit its OOD detector")
            atomic_copy(source, out / name, checksum=True)


def _package_meta(run: RunDir, checkpoint: dict[str, Any], path: Path,
                  evaluation: Evaluation | None) -> ModelMeta:
    import timm

    meta = ModelMeta.from_checkpoint(checkpoint, source=path)
    env = _read_json(run.environment)
    status = _read_json(run.status)
    config_text = run.config.read_bytes() if run.config.is_file() else b""
    lineage = {"timm_version": timm.__version__, "checkpoint": path.name,
               "checkpoint_epoch": checkpoint["state"]["epoch"], "source_run_dir": str(run.path.resolve()),
               "config_sha256": hashlib.sha256(config_text).hexdigest(),
               "git_commit": env.get("git_commit", "unknown"), "git_dirty": env.get("git_dirty"),
               "mlflow_run_id": (status.get("tracking") or {}).get("mlflow"),
               "packaged": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    return meta.for_package(package_format=FORMAT, lineage=lineage, evaluation=evaluation,
                            summary_metrics=task_metrics(meta.task).summary_metrics,
                            temperature=float(_read_json(run.temperature).get("temperature", 1.0)),
                            tta=run.read_config().evaluation.tta if run.config.is_file() else "none")


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def raw_transform(meta: ModelMeta):
    """The package's evaluation preprocessing without normalisation (``data.resize`` to the square, RGB in
    [0, 1]): what an export takes."""
    from plantpheno.data.transforms import square_transform

    return square_transform(meta.image_size, list(meta.mean), meta.resize)


def preprocessing(meta: ModelMeta) -> dict[str, Any]:
    """What a deployment must do to an image before the exported graph: resize mode, size, letterbox colour."""
    from plantpheno.data.batch_augment import pad_fill

    resize = meta.resize
    steps = {"crop": "shorter side to image_size, then the centre square",
             "pad": "longer side to image_size, then centred on a square of pad_fill (letterbox)",
             "stretch": "both sides to image_size"}
    out = {"image_size": meta.image_size, "resize": resize, "resize_steps": steps[resize],
           "pad_fill": list(pad_fill(list(meta.mean))) if resize == "pad" else None,
           "input": "RGB in [0, 1], N x 3 x image_size x image_size (antialiased bilinear resize)"}
    if meta.band_names:  # the bands in their own units, scaled inside the graph (registry/band_export.py)
        from plantpheno.registry.band_export import band_preprocessing

        out.update(band_preprocessing(meta))
    return out


def _write_samples(run: RunDir, meta: ModelMeta, out: Path) -> None:
    """A few test images, preprocessed, so an export can be checked without the dataset at hand."""
    import torch
    from safetensors.torch import save

    from plantpheno.data.images import load_rgb

    split = run.split_manifest
    if not split.is_file():
        return
    from plantpheno.files.csvfile import read_csv

    with read_csv(split) as reader:
        rows = [row for row in reader if row["split"] == "test"][:NUM_SAMPLES]
    paths = [Path(row["path"]) for row in rows]
    if meta.band_names:  # (N, C, S, S): the bands in their own units, as a band export takes them
        from plantpheno.registry.band_export import sample_band_images

        images = sample_band_images(meta, rows)
    else:
        transform = raw_transform(meta)
        images = [transform(load_rgb(p)) for p in paths if p.is_file()]
    if images:
        atomic_write_bytes(out, save({"images": torch.stack(images).contiguous()}), checksum=True)
