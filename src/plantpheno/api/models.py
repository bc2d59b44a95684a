"""The model registry and prediction, from Python (see :mod:`plantpheno.api`)."""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from plantpheno.errors import ArgumentError, DataError, short_repr
from plantpheno.run.folder import RunDir

if TYPE_CHECKING:
    from plantpheno.api.runs import Run
    from plantpheno.records.model_meta import ModelMeta
    from plantpheno.registry.predict import ImageInput, Predictor
    from plantpheno.registry.store import ModelRegistry, VersionInfo


# ----------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------


class Registry:
    """The model registry (MLflow's), as the ``plantpheno models`` commands use it.

    ``uri=None`` finds the registry as the command line does without ``--registry``
    (:func:`~plantpheno.registry.store.resolve_registry_uri`: a run's ``registry.uri``,
    ``$PLANTPHENO_REGISTRY_URI``, ``$MLFLOW_REGISTRY_URI``/``$MLFLOW_TRACKING_URI``, else the project's
    ``runs/mlflow.db`` found from the current folder upwards). Versions are returned as
    :class:`~plantpheno.registry.store.VersionInfo` (name, version, aliases, source, lineage tags).
    """

    def __init__(self, uri: str | None = None) -> None:
        self.uri = uri

    def register_model(self, run: Run | str | os.PathLike[str], name: str, *,
                       alias: str | None = None, force: bool = False) -> VersionInfo:
        """Register a run's best checkpoint as a new version of ``name`` (an MLflow pyfunc model holding the
        plantpheno package); ``alias`` also points that alias at it.

        A run that does not clearly beat its trivial baseline on the test split (or has no test evaluation), or
        that does another job than the name's latest version, raises ``RegistryError`` unless ``force``."""
        path = _run_path(run)
        return self._store(run=path).register(path, name=name, alias=alias, force=force)

    def list_models(self) -> list[VersionInfo]:
        """The latest version of every registered model."""
        return self._store().list_models()

    def versions(self, name: str) -> list[VersionInfo]:
        """Every version of ``name``, oldest first."""
        return self._store().versions(name)

    def get(self, ref: str) -> VersionInfo:
        """The version ``NAME``, ``NAME/VERSION`` or ``NAME@alias`` means."""
        from plantpheno.registry.refs import parse_ref

        return self._store().resolve(parse_ref(ref))

    def promote(self, name: str, version: int, alias: str, *, force: bool = False) -> VersionInfo:
        """Point ``alias`` at ``version`` (atomically: the alias never resolves to two versions); a version that does
        not clearly beat its trivial baseline on test needs ``force``."""
        return self._store().promote(name, version, alias, force=force)

    def delete(self, name: str, version: int | None = None) -> None:
        """Delete one version, or the whole model."""
        self._store().delete(name, version)

    def load_model(self, ref: str, *, device: str = "cpu") -> Model:
        """:func:`load_model` from this registry."""
        return load_model(ref, registry=self.uri, device=device)

    def _store(self, *, run: Path | None = None) -> ModelRegistry:
        return _model_registry(self.uri, run=run)

    def __repr__(self) -> str:
        return f"Registry({self.uri!r})"


def register_model(run: Run | str | os.PathLike[str], name: str, *, alias: str | None = None,
                   registry: str | None = None, force: bool = False) -> VersionInfo:
    """Register a run as a new version of ``name`` (``plantpheno models register RUN --name NAME``), in
    ``registry`` or where the run's config registers by default; ``force`` as in :meth:`Registry.register_model`."""
    return Registry(registry).register_model(run, name, alias=alias, force=force)


def _model_registry(uri: str | None, *, run: Path | None = None) -> ModelRegistry:
    """The registry a command uses: :func:`~plantpheno.registry.store.resolve_registry_uri`, the one rule every
    ``plantpheno models`` command and auto-registration follow (a run's own ``registry.uri`` counts)."""
    from plantpheno.registry.store import ModelRegistry, resolve_registry_uri

    run_uri = RunDir(run).read_config().registry.uri if run is not None and uri is None else None
    return ModelRegistry(resolve_registry_uri(uri, run_uri=run_uri))


# ----------------------------------------------------------------------------------------------
# Prediction
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prediction:
    """One image's prediction: ``label``, ``confidence`` and ``probabilities`` (class -> probability) for a
    classifier, ``value`` (in the trait's units) for a trait model. ``source`` is the file's path (None for
    images given in memory); ``error`` says why an image could not be read (only with ``on_bad_image="skip"``).
    ``ood_score`` and ``unknown``: see :attr:`Model.has_ood`."""

    source: str | None
    label: str | None = None
    confidence: float | None = None
    probabilities: dict[str, float] | None = None
    value: float | None = None
    error: str | None = None
    # the OOD detector's score (higher = less like the training images) and whether it passes the threshold;
    # None for a model without a detector (trained or registered before plantpheno fitted one)
    ood_score: float | None = None
    unknown: bool | None = None

    @property
    def predicted(self) -> str | float | None:
        """The class name, or the trait value."""
        return self.label if self.label is not None else self.value

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Model:
    """A trained model with its preprocessing, ready to predict: made by :func:`load_model`.

    Holds the network in memory (and, for a registry version, a temporary copy of its package until
    :meth:`close`, the end of a ``with`` block, or garbage collection).
    """

    def __init__(self, predictor: Predictor, stack: ExitStack, source: str) -> None:
        self._predictor = predictor
        self.source = source
        self._close = weakref.finalize(self, stack.close)

    @property
    def task(self) -> str:
        """``classification`` or ``regression``."""
        return self.metadata.task

    @property
    def class_names(self) -> list[str] | None:
        names = self.metadata.class_names
        return list(names) if names is not None else None

    @property
    def metadata(self) -> ModelMeta:
        """The package's description as a record (:class:`~plantpheno.records.model_meta.ModelMeta`): backbone,
        task, classes or trait scaling, preprocessing, bands, temperature, TTA, lineage, test metrics."""
        return self._predictor.package.meta

    @property
    def meta(self) -> dict[str, Any]:
        """The package's description as the plain mapping ``plantpheno_model.json`` holds (see :attr:`metadata`)."""
        return self.metadata.to_dict()

    @property
    def card(self) -> str:
        """The model card (Markdown)."""
        from plantpheno.registry.package import CARD_FILE

        path = self._predictor.package.folder / CARD_FILE
        return path.read_text(encoding="utf-8") if path.is_file() else ""

    @property
    def band_importance(self) -> dict[str, Any] | None:
        """For a model of ``data.bands``, its ``band_importance.json``: per band (``bands``, ranked) the drop of the
        validation headline (``metric``) when the band is replaced by its training mean, with its interval
        (``drop``: ``estimate``, ``low``, ``high``); None for an RGB model or one registered before packages kept it.
        A measurement of the run, as the model card, not part of the model's description (:attr:`metadata`)."""
        return self._predictor.package.band_importance()

    @property
    def has_ood(self) -> bool:
        """Whether the model has an OOD detector: then every prediction carries ``ood_score`` and ``unknown`` (the
        score past the threshold that keeps ``evaluation.ood.keep`` of the validation images)."""
        return self._predictor.ood is not None

    def predict(self, images: ImageInput | Sequence[ImageInput], *, batch_size: int = 32,
                on_bad_image: Literal["error", "skip"] = "error", progress: bool = False,
                unknown_label: bool = False) -> list[Prediction]:
        """Predict for one image or many, in the order given; ``unknown_label`` makes ``label`` ``"unknown"`` for
        images the OOD detector flags.

        An image is a file path (a folder means every image file in it), encoded image bytes, a PIL image, or a
        numpy array, channels last: ``(H, W)`` grey, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA, uint8 (0-255) or
        float (0-1); a ``(N, H, W, C)`` array is N images. Each is decoded and preprocessed as training did. A
        model of ``data.bands`` takes its band files (TIFF, ``.npy``, ``.npz``, false-colour PNG/JPEG) or arrays of
        their channels ``(H, W, C)``; an image with fewer bands than it reads raises one DataError.

        Raises:
            DataError: listing every image that cannot be read; with ``on_bad_image="skip"`` those come back as
                predictions with ``error`` set instead.
        """
        from plantpheno.registry.predict import check_batch_size

        if on_bad_image not in ("error", "skip"):
            raise ArgumentError(f"on_bad_image: got {short_repr(on_bad_image)}; expected 'error' or 'skip'")
        check_batch_size(batch_size)
        items, sources = _expand(images, self._predictor.bands)
        results, bad, scores = self._predictor.predict_with_scores(items, batch_size=batch_size, progress=progress)
        if bad and on_bad_image == "error":
            listed = "; ".join(f"{sources[i] or f'image {i}'}: {why}" for i, why in bad)
            raise DataError(f"{len(bad)} of {len(items)} image(s) could not be read: {listed}")
        predictions: list[Prediction | None] = [None] * len(items)
        for i, output in results:
            described = self._predictor.describe(output, scores.get(i), unknown_label=unknown_label)
            ood = {"ood_score": described.get("ood_score"), "unknown": described.get("unknown")}
            if "probabilities" in described:
                predictions[i] = Prediction(sources[i], label=described["predicted"],
                                            confidence=described["confidence"],
                                            probabilities=described["probabilities"], **ood)
            else:
                predictions[i] = Prediction(sources[i], value=described["predicted"], **ood)
        for i, why in bad:
            predictions[i] = Prediction(sources[i], error=why)
        return [p for p in predictions if p is not None]

    def close(self) -> None:
        """Remove the temporary package copy (the model stays usable in memory)."""
        self._close()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        what = f"{len(self.class_names)} classes" if self.class_names else "trait"
        return f"Model({self.source!r}, {self.metadata.backbone}, {self.task}, {what})"


def load_model(ref: str | os.PathLike[str] | Run, *, registry: str | None = None, device: str = "cpu") -> Model:
    """A model ready to predict, from a registry reference (``NAME`` = latest version, ``NAME/3``,
    ``NAME@alias``), a run directory (its best checkpoint) or a model package folder (also a registered
    version's MLflow model folder) — resolved exactly as ``plantpheno predict MODEL`` resolves it.

    ``registry`` is the registry URI (default: found as every command finds it, see :class:`Registry`);
    ``device`` is cpu (default), cuda, mps or auto.
    """
    from plantpheno.registry.model_source import open_model
    from plantpheno.registry.predict import Predictor

    if not isinstance(ref, (str, os.PathLike)) or not os.fspath(ref):  # a Run is an os.PathLike
        raise ArgumentError(f"ref: got {short_repr(ref)}; expected a registered model (NAME, NAME/VERSION, "
                            f"NAME@alias), a run directory or a model package folder")
    source = str(_run_path(ref)) if isinstance(ref, os.PathLike) else str(ref)
    stack = ExitStack()
    try:
        predictor = Predictor(open_model(source, stack, registry_uri=registry), device=device)
    except BaseException:
        stack.close()
        raise
    if predictor.ood_note is not None:  # one line, not an error: the model predicts as it always did
        import logging

        logging.getLogger("plantpheno").warning(predictor.ood_note.replace(str(predictor.package.folder), source))
    return Model(predictor, stack, source)


def _expand(images: Any, bands: Any = None) -> tuple[list[Any], list[str | None]]:
    """The images to predict, one per item (folders expanded to their image files; ``bands``: a band model's
    :class:`~plantpheno.data.band_input.BandInput`), and each one's path. A dict is one image of band files (a band
    model's only: an RGB model refuses it as before)."""
    import numpy as np
    from PIL import Image

    from plantpheno.registry.predict import collect_images

    one = isinstance(images, (str, os.PathLike, bytes, bytearray, memoryview, Image.Image)) or (
        isinstance(images, np.ndarray) and images.ndim in (2, 3)) or (bands is not None and isinstance(images, dict))
    items: list[Any] = []
    sources: list[str | None] = []
    if not one and (not isinstance(images, Iterable) or isinstance(images, Mapping)):
        raise ArgumentError(f"images: got a {type(images).__name__}; expected an image (path, bytes, PIL image, "
                            f"array) or a list of them")
    listed = [images] if one else list(images)
    if not listed:
        raise ArgumentError("images: got an empty list; expected at least one image")
    for item in listed:
        if isinstance(item, (str, os.PathLike)):
            if not os.fspath(item):  # Path("") is ".": the current folder would be scanned
                raise ArgumentError("images: got an empty path ''; expected an image file or a folder of them")
            path = Path(item)
            found = collect_images([path], bands=bands) if path.is_dir() else [path]
            items += found
            sources += [str(p) for p in found]
        else:
            items.append(item)
            sources.append(str(item["image"]) if isinstance(item, dict) and isinstance(item.get("image"),
                                                                                       (str, os.PathLike)) else None)
    return items, sources


def _run_path(run: Run | str | os.PathLike[str]) -> Path:
    """A run's folder; a :class:`~plantpheno.api.runs.Run` is an ``os.PathLike``, so this module needs no run-time
    import of :mod:`plantpheno.api.runs` (which imports this one to register and load its runs)."""
    return Path(os.fspath(run))
