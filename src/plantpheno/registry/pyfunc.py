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
with an image file the serving process can read. Output, one row per input row: ``predicted`` (the class),
``confidence`` and ``p_<class>`` for every class; or ``predicted`` (the trait value in its own units). Images are
decoded and preprocessed exactly as ``plantpheno predict`` does; an unreadable image fails the request (HTTP 400)
naming every bad row. The device is ``model_config={"device": ...}`` at load time: auto (the default: CUDA, then
MPS, then CPU), cpu or cuda.
"""

from __future__ import annotations

import base64
import binascii
import io
import tempfile
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

from plantpheno import __version__
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


class PlantPhenoPyfunc(PythonModel):
    """A plantpheno package as an MLflow python model: image bytes or paths in, classes or trait values out."""

    def load_context(self, context: Any) -> None:
        from plantpheno.registry.predict import Predictor

        config = dict(context.model_config or {})
        self.predictor = Predictor(ModelPackage.open(Path(context.artifacts[PYFUNC_ARTIFACT])),
                                   device=str(config.get("device", "auto")))

    # MLflow reads predict's type hints: a DataFrame is the one hint it neither warns about nor turns into a
    # schema of its own (the signature written at registration says what the columns are)
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """One output row per input row (see the module's docstring); an unreadable image fails the call."""
        from mlflow.exceptions import MlflowException

        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if not {"image", "path"} & set(frame.columns):
            raise MlflowException.invalid_parameter_value(
                f"plantpheno model input needs a column 'image' (encoded image bytes; base64 in JSON) or 'path' "
                f"(an image file), one image per row; got columns {list(frame.columns)}")
        rows, images, bad = [], [], []
        for row in range(len(frame)):
            try:
                images.append(_row_image(frame, row))
                rows.append(row)
            except ValueError as exc:
                bad.append((row, str(exc)))
        results, unreadable = self.predictor.predict_images(images)
        bad += [(rows[i], why) for i, why in unreadable]
        if bad:
            listed = "; ".join(f"row {row}: {why}" for row, why in sorted(bad)[:MAX_LISTED_ERRORS])
            more = f" (and {len(bad) - MAX_LISTED_ERRORS} more)" if len(bad) > MAX_LISTED_ERRORS else ""
            raise MlflowException.invalid_parameter_value(
                f"{len(bad)} of {len(frame)} image(s) could not be read: {listed}{more}")
        return pd.DataFrame([_row_output(self.predictor.describe(out)) for _, out in results],
                            columns=output_columns(self.predictor.package))


def _row_image(frame: pd.DataFrame, row: int) -> bytes | Path:
    """The image of one input row: its bytes (base64 text is decoded), else its path."""
    image = frame["image"].iloc[row] if "image" in frame.columns else None
    if isinstance(image, str):
        try:
            return base64.b64decode(image, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("'image' holds text that is not base64 (send the encoded file's bytes, base64-encoded "
                             "in JSON, or use the 'path' column)") from None
    if isinstance(image, (bytes, bytearray, memoryview)):
        return _maybe_base64(bytes(image))
    path = frame["path"].iloc[row] if "path" in frame.columns else None
    if isinstance(path, str) and path:
        return Path(path)
    if image is not None and not pd.isna(image):
        raise ValueError(f"'image' holds a {type(image).__name__}; expected encoded image bytes")
    raise ValueError("neither 'image' nor 'path' is given")


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
    return row


def output_columns(package: ModelPackage) -> list[str]:
    """``predicted, confidence, p_<class>...`` (classification) or ``predicted`` (trait), as ``plantpheno predict``
    writes them."""
    names = package.meta.get("class_names")
    return ["predicted", "confidence", *(f"p_{n}" for n in names)] if names else ["predicted"]


def signature(package: ModelPackage) -> Any:
    """Input: optional ``image`` (binary) and ``path`` (string) columns; output: the prediction columns."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = Schema([ColSpec("binary", "image", required=False), ColSpec("string", "path", required=False)])
    outputs = [ColSpec("string" if package.meta.get("class_names") else "double", "predicted")]
    outputs += [ColSpec("double", name) for name in output_columns(package)[1:]]
    return ModelSignature(inputs=inputs, outputs=Schema(outputs))


def input_example(package: ModelPackage) -> pd.DataFrame:
    """One stored test image (preprocessed, as PNG bytes), or a grey square when the package holds none."""
    import numpy as np
    from PIL import Image

    samples = package.sample_inputs()
    size = int(package.meta["image_size"])
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
    return {"plantpheno_format": FORMAT, "task": m["task"], "backbone": m["backbone"],
            "image_size": m["image_size"], "class_names": m.get("class_names"),
            "headline_metric": m.get("headline_metric"), "test_metrics": m.get("test_metrics") or {}}


def save_pyfunc_model(package: ModelPackage, path: Path) -> Path:
    """Write the MLflow model folder of ``package`` to ``path`` (which must not exist yet, or be empty)."""
    with tempfile.TemporaryDirectory(prefix="plantpheno-pyfunc-") as tmp:
        code = Path(tmp) / CODE_FILE
        code.write_text(ENTRY_POINT, encoding="utf-8")
        mlflow.pyfunc.save_model(path=str(path), python_model=str(code),
                                 artifacts={PYFUNC_ARTIFACT: str(package.folder)}, signature=signature(package),
                                 input_example=input_example(package), pip_requirements=requirements(),
                                 metadata=model_metadata(package))
    return path
