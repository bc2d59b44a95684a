"""Every registered version is also an MLflow pyfunc model, so MLflow loads and serves it as it does its own.

Registration (:meth:`ModelRegistry.register`) stores this MLflow model folder around the package:

    MLmodel                  python_function flavor: the entry point, signature, input example, metadata
    plantpheno_pyfunc.py     the entry point, ``set_model(PlantPhenoPyfunc())``: code, not a pickle
    artifacts/package/       the plantpheno package (safetensors weights, preprocessing, model card)
    requirements.txt, python_env.yaml, conda.yaml     the versions it was made with, pinned
    input_example.json, serving_input_example.json    one stored test image

so that ``mlflow.pyfunc.load_model("models:/NAME@ALIAS")`` and ``mlflow models serve -m models:/NAME@ALIAS
--env-manager local`` work wherever mlflow and plantpheno are installed. This is MLflow's "models from code"
route: nothing is unpickled when the model loads (MLflow 3 refuses pickled python models by default).

Input, one image per row: a column ``image`` with the encoded image file (JPEG, PNG, TIFF, ... bytes; base64 text
in a JSON request, as MLflow's ``binary`` type is sent, in any of MLflow's request formats), or a column ``path``
naming an image file inside the folder the model was served with (``model_config`` ``allowed_image_dir``; without
it a request with paths is refused and nothing is read: any HTTP client could otherwise have the server decode
any file it can read). Output, one row per input row: ``predicted`` (the class), ``confidence`` and ``p_<class>``
for every class; or ``predicted`` (the trait value in its own units); for a model with an OOD detector also
``ood_score`` and ``unknown`` (``predicted`` is ``unknown`` for flagged images with model_config
``unknown_label: true``). A model with bands of their own files (``data.bands`` ``column``/``pattern``) takes them
beside ``image``: a column per band file named after the band (bytes, base64 in JSON) or ``<band>_path``
(registry/pyfunc_bands.py); a request without a band's column is refused (HTTP 400) naming it. Images are decoded
and preprocessed exactly as ``plantpheno predict`` does, under the same pixel limit as training; an unreadable
image fails the request (HTTP 400) naming every bad row.

``model_config`` at load time (``mlflow.pyfunc.load_model(uri, model_config={...})``, or the environment variable
``SERVING_MODEL_CONFIG`` holding it as JSON for ``mlflow models serve``; versions registered before plantpheno
stored these keys take none, so they refuse every path): ``device`` auto (the default: CUDA, then
MPS, then CPU), cpu or cuda; ``allowed_image_dir`` (see above); ``max_image_pixels`` (default 100 M, as
data.max_image_pixels); ``max_rows`` per request (default 256); ``unknown_label`` (default false). An encoded
image may hold at most 64 MiB.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import stat
import tempfile
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

from plantpheno.version import __version__
from plantpheno.data.images import DEFAULT_MAX_PIXELS
from plantpheno.errors import ModelError, PlantPhenoError, short_repr
from plantpheno.registry.package import FORMAT, PYFUNC_ARTIFACT, ModelPackage

CODE_FILE = "plantpheno_pyfunc.py"
ENTRY_POINT = f'''"""MLflow models-from-code entry point of a plantpheno model (written by plantpheno {__version__}).

The model itself is the package in artifacts/package/; this file only names the class that serves it.
"""

from mlflow.models import set_model

from plantpheno.registry.pyfunc import PlantPhenoPyfunc

set_model(PlantPhenoPyfunc())
'''
# what a served model needs, pinned to the versions it was registered with (those that are installed)
REQUIREMENTS = ("plantpheno", "mlflow", "torch", "torchvision", "timm", "safetensors", "pillow", "numpy", "pandas")
MAX_LISTED_ERRORS = 10
# Request limits. MLflow's server itself takes a body of any size; these bound what one request makes the model do.
MAX_ROWS = 256  # images per request (model_config max_rows)
MAX_IMAGE_BYTES = 64 << 20  # one encoded image, sent or read from allowed_image_dir (a 100 MP JPEG is ~30 MB)
# stored with the model: MLflow lets a load (or SERVING_MODEL_CONFIG) set only the keys the model was saved with
DEFAULT_MODEL_CONFIG = {"device": "auto", "allowed_image_dir": None, "max_image_pixels": DEFAULT_MAX_PIXELS,
                        "max_rows": MAX_ROWS, "unknown_label": False}
SERVING_KEYS = tuple(DEFAULT_MODEL_CONFIG)


@dataclass(frozen=True)
class ServingOptions:
    """The served model's ``model_config``, checked when it loads."""

    device: str = "auto"
    allowed_image_dir: Path | None = None  # resolved: paths are only read inside it
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    max_rows: int = MAX_ROWS
    unknown_label: bool = False  # 'predicted' is 'unknown' for images the OOD detector flags

    @classmethod
    def parse(cls, config: dict[str, Any]) -> ServingOptions:
        """Every key checked, naming it and what was expected (:class:`~plantpheno.errors.ModelError`)."""
        unknown = sorted(set(config) - set(SERVING_KEYS))
        if unknown:
            raise ModelError(f"model_config: unknown key(s) {', '.join(map(repr, unknown))}; expected some of "
                             f"{', '.join(SERVING_KEYS)}")
        folder = config.get("allowed_image_dir")
        if folder is not None:
            if not isinstance(folder, (str, os.PathLike)) or not str(folder) or not Path(folder).is_dir():
                raise ModelError(f"model_config allowed_image_dir: got {short_repr(folder)}; expected an existing "
                                 f"folder (the only one whose images 'path' inputs may name)")
            folder = Path(os.path.realpath(folder))
        unknown_label = config.get("unknown_label", False)
        if not isinstance(unknown_label, bool):
            raise ModelError(f"model_config unknown_label: got {short_repr(unknown_label)}; expected true or false")
        return cls(device=str(config.get("device", "auto")), allowed_image_dir=folder, unknown_label=unknown_label,
                   max_image_pixels=_positive_int(config, "max_image_pixels", DEFAULT_MAX_PIXELS),
                   max_rows=_positive_int(config, "max_rows", MAX_ROWS))


def _positive_int(config: dict[str, Any], key: str, default: int) -> int:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelError(f"model_config {key}: got {short_repr(value)}; expected an integer >= 1")
    return value


class PlantPhenoPyfunc(PythonModel):
    """A plantpheno package as an MLflow python model: image bytes or paths in, classes or trait values out."""

    def load_context(self, context: Any) -> None:
        from plantpheno.registry.predict import Predictor

        self.options = ServingOptions.parse(dict(context.model_config or {}))
        self.predictor = Predictor(ModelPackage.open(Path(context.artifacts[PYFUNC_ARTIFACT])),
                                   device=self.options.device, max_pixels=self.options.max_image_pixels)

    # MLflow reads predict's type hints: a DataFrame is the one hint it neither warns about nor turns into a
    # schema of its own (the signature written at registration says what the columns are)
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """One output row per input row (see the module's docstring); an unreadable image fails the call."""
        from mlflow.exceptions import MlflowException

        from plantpheno.registry import pyfunc_bands

        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        band_files = pyfunc_bands.file_bands(self.predictor.package)  # a model with one file per band: its columns
        missing = pyfunc_bands.missing_band_columns(frame, band_files)
        if missing is not None:
            raise MlflowException.invalid_parameter_value(missing)
        needs_image = pyfunc_bands.reads_image(self.predictor.package)  # not when every band has its own file
        if needs_image and not {"image", "path"} & set(frame.columns):
            raise MlflowException.invalid_parameter_value(
                f"plantpheno model input needs a column 'image' (encoded image bytes; base64 in JSON) or 'path' "
                f"(an image file), one image per row; got columns {list(frame.columns)}")
        if len(frame) > self.options.max_rows:
            raise MlflowException.invalid_parameter_value(
                f"{len(frame)} images in one request; at most {self.options.max_rows} are accepted (model_config "
                f"max_rows): send them in several requests")
        if "path" in frame.columns and frame["path"].notna().any() and self.options.allowed_image_dir is None:
            raise MlflowException.invalid_parameter_value(
                "'path' inputs are refused: this model was served without model_config allowed_image_dir (the one "
                "folder whose images requests may name); send the image bytes in the 'image' column")
        rows, images, bad = [], [], []
        for row in range(len(frame)):
            try:
                images.append(_row_input(frame, row, self.options.allowed_image_dir, band_files,
                                         reads_image=needs_image))
                rows.append(row)
            except ValueError as exc:
                bad.append((row, str(exc)))
        try:
            results, unreadable, scores = self.predictor.predict_with_scores(images)
        except PlantPhenoError as exc:  # e.g. images without the bands a model of data.bands reads: HTTP 400
            raise MlflowException.invalid_parameter_value(str(exc)) from None
        bad += [(rows[i], why) for i, why in unreadable]
        if bad:
            listed = "; ".join(f"row {row}: {why}" for row, why in sorted(bad)[:MAX_LISTED_ERRORS])
            more = f" (and {len(bad) - MAX_LISTED_ERRORS} more)" if len(bad) > MAX_LISTED_ERRORS else ""
            raise MlflowException.invalid_parameter_value(
                f"{len(bad)} of {len(frame)} image(s) could not be read: {listed}{more}")
        described = [self.predictor.describe(out, scores.get(i), unknown_label=self.options.unknown_label)
                     for i, out in results]
        return pd.DataFrame([_row_output(d) for d in described], columns=output_columns(self.predictor.package))


def _row_input(frame: pd.DataFrame, row: int, allowed: Path | None, band_files: tuple[Any, ...], *,
               reads_image: bool) -> bytes | dict[str, bytes | None]:
    """One row's image: its encoded file, or for a model with bands of their own files a dict of the image and
    those files (registry/pyfunc_bands.py), as the Python API takes it."""
    if not band_files:
        return _row_image(frame, row, allowed)
    from plantpheno.registry.pyfunc_bands import row_band_files

    image = _row_image(frame, row, allowed) if reads_image else None
    files = row_band_files(frame, row, band_files, allowed, read_bytes=_sent_bytes, read_path=read_allowed)
    return {"image": image, **files}


def _sent_bytes(value: Any, column: str) -> bytes:
    """A file sent in a column: bytes, or base64 text (as JSON carries MLflow's ``binary`` type)."""
    if isinstance(value, str):
        try:
            return _limited(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            raise ValueError(f"{column} holds text that is not base64 (send the file's bytes, base64-encoded in "
                             f"JSON)") from None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _limited(_maybe_base64(bytes(value)))
    raise ValueError(f"{column} holds a {type(value).__name__}; expected a file's bytes")


def _row_image(frame: pd.DataFrame, row: int, allowed: Path | None) -> bytes:
    """The encoded image of one input row: its bytes (base64 text is decoded), else the file its path names
    inside ``allowed``."""
    image = frame["image"].iloc[row] if "image" in frame.columns else None
    if isinstance(image, str):
        try:
            decoded = base64.b64decode(image, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("'image' holds text that is not base64 (send the encoded file's bytes, base64-encoded "
                             "in JSON, or use the 'path' column)") from None
        return _limited(decoded)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return _limited(_maybe_base64(bytes(image)))
    path = frame["path"].iloc[row] if "path" in frame.columns else None
    if isinstance(path, str) and path and allowed is not None:
        return read_allowed(path, allowed)
    if image is not None and not pd.isna(image):
        raise ValueError(f"'image' holds a {type(image).__name__}; expected encoded image bytes")
    raise ValueError("neither 'image' nor 'path' is given")


def _limited(data: bytes) -> bytes:
    if len(data) > MAX_IMAGE_BYTES:
        raise ValueError(f"an encoded image of {len(data):,} bytes; at most {MAX_IMAGE_BYTES:,} are accepted")
    return data


def read_allowed(path: str, allowed: Path) -> bytes:
    """The bytes of the regular file ``path`` names (relative to ``allowed``, or absolute) if, with every link and
    ``..`` resolved, it lies inside ``allowed``. A path outside, a missing or unreadable file, a folder, FIFO or
    device all get the same refusal: whether a file exists outside the folder is not the client's to learn."""
    refusal = ValueError(f"path {short_repr(path)}: no readable image file of that name inside the folder this "
                         f"model serves images from (model_config allowed_image_dir)")
    try:
        resolved = Path(os.path.realpath(allowed / path))
        if not resolved.is_relative_to(allowed):
            raise refusal
        # O_NONBLOCK: a FIFO swapped in after realpath cannot block the open; fstat then sees what was opened
        fd = os.open(resolved, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except (OSError, ValueError):  # ValueError: a NUL byte in the path
        raise refusal from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):  # a folder, FIFO, device or socket
        os.close(fd)
        raise refusal
    with os.fdopen(fd, "rb") as fh:
        if info.st_size > MAX_IMAGE_BYTES:
            raise ValueError(f"path {short_repr(path)}: a file of {info.st_size:,} bytes; at most "
                             f"{MAX_IMAGE_BYTES:,} are accepted")
        return _limited(fh.read(MAX_IMAGE_BYTES + 1))


def _maybe_base64(data: bytes) -> bytes:
    """Bytes as sent: MLflow decodes the base64 of ``dataframe_records``/``dataframe_split`` requests, but passes
    that of ``inputs``/``instances`` requests on as bytes. Base64 text is only letters, digits, ``+/=``; no image
    format's file starts that way (JPEG 0xFF, PNG 0x89, TIFF/BMP/WebP headers hold binary bytes), so such bytes
    are decoded and anything else is taken as the file itself."""
    try:
        return base64.b64decode(data, validate=True) if data else data
    except (binascii.Error, ValueError):
        return data


def _row_output(described: dict[str, Any]) -> dict[str, Any]:
    row = {"predicted": described["predicted"]}
    if "probabilities" in described:
        row["confidence"] = described["confidence"]
        row.update({f"p_{name}": p for name, p in described["probabilities"].items()})
    if "ood_score" in described:
        row.update(ood_score=described["ood_score"], unknown=described["unknown"])
    return row


def output_columns(package: ModelPackage) -> list[str]:
    """``predicted, confidence, p_<class>...`` (classification) or ``predicted`` (trait), as ``plantpheno predict``
    writes them."""
    from plantpheno.evaluation.ood import DETECTOR_FILE

    names = package.meta.class_names
    columns = ["predicted", "confidence", *(f"p_{n}" for n in names)] if names else ["predicted"]
    # a package with an OOD detector: its score and the unknown flag (versions registered before have neither)
    return columns + (["ood_score", "unknown"] if (package.folder / DETECTOR_FILE).is_file() else [])


def signature(package: ModelPackage) -> Any:
    """Input: optional ``image`` (binary) and ``path`` (string) columns, and for a model with bands of their own
    files ``<band>`` (binary) and ``<band>_path`` (string) per band (registry/pyfunc_bands.py); output: the
    prediction columns."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from plantpheno.registry.pyfunc_bands import band_columns

    inputs = Schema([ColSpec("binary", "image", required=False), ColSpec("string", "path", required=False),
                     *band_columns(package)])
    outputs = [ColSpec("string" if package.meta.class_names else "double", "predicted")]
    outputs += [ColSpec("boolean" if name == "unknown" else "double", name) for name in output_columns(package)[1:]]
    return ModelSignature(inputs=inputs, outputs=Schema(outputs))


def input_example(package: ModelPackage) -> pd.DataFrame:
    """One stored test image (preprocessed, as PNG bytes), or a grey square when the package holds none."""
    import numpy as np
    from PIL import Image

    if package.meta.band_names:  # a model of data.bands reads TIFFs of its bands
        from plantpheno.data.band_input import example_tiff
        from plantpheno.registry.pyfunc_bands import example_band_files, reads_image

        image = {"image": [example_tiff(package.meta)]} if reads_image(package) else {}
        return pd.DataFrame({**image, **example_band_files(package)})
    samples = package.sample_inputs()
    size = package.meta.image_size
    if samples is not None and len(samples):
        pixels = (samples[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    else:
        pixels = np.full((size, size, 3), 128, dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return pd.DataFrame({"image": [buf.getvalue()]})


def requirements() -> list[str]:
    """``name==version`` for what serving needs, as installed here."""
    pins = []
    for name in REQUIREMENTS:
        try:
            pins.append(f"{name}=={importlib_metadata.version(name)}")
        except importlib_metadata.PackageNotFoundError:
            if name == "plantpheno":
                pins.append(f"plantpheno=={__version__}")
    return pins


def model_metadata(package: ModelPackage) -> dict[str, Any]:
    """What MLflow shows about the model (MLmodel's metadata): task, classes, backbone, input size, test metrics."""
    m = package.meta
    return {"plantpheno_format": FORMAT, "task": m.task, "backbone": m.backbone, "image_size": m.image_size,
            "class_names": m.class_names, "headline_metric": m.headline_metric, "test_metrics": m.test_metrics or {}}


def save_pyfunc_model(package: ModelPackage, path: Path) -> Path:
    """Write the MLflow model folder of ``package`` to ``path`` (which must not exist yet, or be empty)."""
    with tempfile.TemporaryDirectory(prefix="plantpheno-pyfunc-") as tmp:
        code = Path(tmp) / CODE_FILE
        code.write_text(ENTRY_POINT, encoding="utf-8")
        mlflow.pyfunc.save_model(path=str(path), python_model=str(code),
                                 artifacts={PYFUNC_ARTIFACT: str(package.folder)}, signature=signature(package),
                                 input_example=input_example(package), pip_requirements=requirements(),
                                 metadata=model_metadata(package), model_config=DEFAULT_MODEL_CONFIG)
    return path
