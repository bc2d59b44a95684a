"""Model metadata: what a checkpoint and a model package record to rebuild a network and apply it. Its one home.

:class:`ModelMeta` is built once per run (:func:`build_model_meta`, from the task, the backbone and the
preprocessing), stored in every checkpoint as a plain mapping (checkpoints load with ``weights_only=True``), and
extended into a package's ``plantpheno_model.json`` with lineage and the test evaluation's summary
(:meth:`ModelMeta.for_package`). Files of either kind are read back through :func:`read_meta` or
:meth:`ModelMeta.from_checkpoint`, which run the one migration (:func:`migrate_meta`) on files written by an older
plantpheno (``meta_version`` 1, the version before this record: no ``meta_version``, no ``bands``, and, older still,
no ``resize``, ``counts``, ``temperature`` or ``tta``).

A package travels (registry downloads, copied folders, hand edits), so its description is untrusted input: every
field the model is rebuilt and applied from is checked, each problem named by its field with what was expected
(a negative temperature would flip every predicted class). Unknown fields are kept as they are.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, StrictFloat, StrictInt, ValidationError, field_validator,
                      model_validator)

from plantpheno.errors import PlantPhenoError, RegistryError, RunDirError, short_repr
from plantpheno.records.evaluation import Evaluation, Interval, Verdict

META_VERSION = 2  # 1: before this record (no version field); 2: meta_version and bands recorded
MAX_META_BYTES = 16 << 20  # a description is a few KB; 16 MiB allows a package with very many classes
Number = StrictFloat  # an int or a float; not a bool, not text such as "hot"
TaskName = Literal["classification", "regression"]


class BandsMeta(BaseModel):
    """``bands``: what a model of ``data.bands`` reads and how it scales each band (``data/bands.py`` fills it)."""

    model_config = ConfigDict(frozen=True, extra="allow", allow_inf_nan=False)

    specs: list[dict[str, Any]] = Field(min_length=1, max_length=64)
    names: list[str] = Field(min_length=1, max_length=64)
    low: list[Number]
    high: list[Number]
    mean: list[Number]
    std: list[Number]
    input_adapter: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> BandsMeta:
        count = len(self.names)
        if len(self.specs) != count or any(len(v) != count for v in (self.low, self.high, self.mean, self.std)):
            raise ValueError(f"bands: specs, low, high, mean and std need one entry per band name ({count})")
        if min(self.std) <= 0:
            raise ValueError(f"bands.std: got {self.std}; expected values > 0")
        return self


class ParentModel(BaseModel):
    """``parent_model``: the model a run started from (``model.init_from``), for the lineage; never applied."""

    model_config = ConfigDict(frozen=True, extra="allow")

    reference: str
    kind: Literal["run", "registry"]
    run_dir: str | None = None
    checkpoint: str | None = None
    checkpoint_epoch: int | None = None
    backbone: str | None = None
    registry: str | None = None
    name: str | None = None
    version: int | str | None = None


class ModelMeta(BaseModel):
    """What a model needs to be rebuilt and applied, and where it came from. Frozen; read by attribute."""

    model_config = ConfigDict(frozen=True, extra="allow", allow_inf_nan=False)

    meta_version: StrictInt = META_VERSION
    format: str | None = None  # a package's format (registry/package.py FORMAT); None in a checkpoint
    plantpheno_version: str = "unknown"
    # the task: class names, or the trait's training scaling
    task: TaskName
    num_outputs: StrictInt = Field(ge=1, le=1_000_000)
    class_names: list[str] | None = None
    target_mean: Number | None = None
    target_std: Number | None = None
    counts: bool = False  # a count trait: predictions also come rounded
    # the network and its preprocessing
    backbone: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_./-]*$")
    image_size: StrictInt = Field(ge=16, le=2048)
    resize: Literal["crop", "pad", "stretch"] = "crop"
    mean: tuple[Number, Number, Number]
    std: tuple[Number, Number, Number]
    bands: Literal["RGB"] | BandsMeta = "RGB"  # the input channels: RGB, or data.bands' names and scaling
    # applied by predict and inside exports: softmax(logits / temperature), logits averaged over the TTA views
    temperature: Number | None = None
    tta: Literal["none", "flips", "d4"] | None = None
    # lineage (packages): shown, never applied
    parent_model: ParentModel | None = None  # model.init_from: the model this run's weights started from
    dataset_fingerprint: str | None = None
    timm_version: str | None = None
    checkpoint: str | None = None
    checkpoint_epoch: int | None = None
    source_run_dir: str | None = None
    config_sha256: str | None = None
    git_commit: str | None = None
    git_dirty: bool | None = None
    mlflow_run_id: str | None = None
    packaged: str | None = None
    # the test evaluation's summary (packages; None: no test evaluation)
    test_metrics: dict[str, float | None] | None = None
    headline_metric: str | None = None
    confidence_interval: Interval | None = None
    baseline_verdict: Verdict | None = None

    @field_validator("bands", mode="before")
    @classmethod
    def _bands(cls, value: Any) -> Any:
        # one message for both forms (pydantic would list each member of the union)
        if not (value == "RGB" or isinstance(value, (dict, BandsMeta))):
            raise ValueError(f"Input should be 'RGB' or a data.bands block (specs, names, low, high, mean, std), "
                             f"got {short_repr(value)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ModelMeta:
        if min(self.std) <= 0:
            raise ValueError(f"std: got {list(self.std)}; expected three values > 0")
        if self.temperature is not None and not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature: got {self.temperature!r}; expected a finite number > 0 (a negative "
                             f"one would flip every predicted class)")
        if self.task == "classification":
            names = self.class_names
            if not names or len(names) != self.num_outputs:
                got = "none" if not names else f"{len(names)}"
                raise ValueError(f"class_names: got {got} for a head of num_outputs = {self.num_outputs}; expected "
                                 f"one name per output")
            if len(set(names)) != len(names) or not all(names):
                raise ValueError("class_names: expected distinct, non-empty names")
        else:
            if self.num_outputs != 1:
                raise ValueError(f"num_outputs: got {self.num_outputs} for a regression; expected 1")
            if self.target_mean is None or self.target_std is None or not self.target_std > 0:
                raise ValueError(f"target_mean, target_std: got {self.target_mean!r}, {self.target_std!r}; a "
                                 f"regression needs both, target_std > 0")
        return self

    # ------------------------------------------------------------------ what readers ask

    @property
    def is_classification(self) -> bool:
        return self.task == "classification"

    @property
    def band_names(self) -> list[str] | None:
        """The names of the bands a model of ``data.bands`` reads, in order (None: an RGB model)."""
        return list(self.bands.names) if isinstance(self.bands, BandsMeta) else None

    @property
    def applied_temperature(self) -> float:
        """The temperature predictions are divided by (1 where none was fitted or recorded)."""
        return float(self.temperature or 1.0)

    @property
    def applied_tta(self) -> str:
        """The test-time augmentation predictions use (``none`` where none was recorded)."""
        return str(self.tta or "none")

    @property
    def extra(self) -> dict[str, Any]:
        """Fields this version does not know (written by a newer plantpheno or by hand), kept as they were."""
        return dict(self.model_extra or {})

    def as_applied(self, *, temperature: float, tta: str) -> ModelMeta:
        """This metadata with the temperature and test-time augmentation an evaluation applied (a report's card)."""
        return _validate({**self.to_dict(), "temperature": float(temperature), "tta": tta}, source="model metadata",
                         error=RunDirError)

    # ------------------------------------------------------------------ writing

    def to_dict(self) -> dict[str, Any]:
        """The plain mapping stored in checkpoints and in ``plantpheno_model.json`` (fields never set left out)."""
        return self.model_dump(mode="json", exclude_unset=True)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def for_package(self, *, package_format: str, lineage: dict[str, Any], evaluation: Evaluation | None,
                 summary_metrics: tuple[str, ...], temperature: float, tta: str) -> ModelMeta:
        """This checkpoint's metadata as a package describes it: with ``package_format``, ``lineage`` (timm version,
        checkpoint, run folder, config hash, git, MLflow run, time packaged), the test ``evaluation``'s summary
        (its ``summary_metrics``, interval and verdict) and the ``temperature`` and ``tta`` prediction applies."""
        ev = evaluation
        summary = {
            "test_metrics": {k: v for k, v in (ev.values if ev else {}).items() if k in summary_metrics},
            "headline_metric": ev.headline_metric if ev else None,
            "confidence_interval": ev.confidence_interval.to_dict() if ev and ev.confidence_interval else None,
            "baseline_verdict": ev.verdict.to_dict() if ev and ev.verdict else None,
        }
        fields = {"format": package_format, **self.to_dict(), **lineage, **summary, "temperature": float(temperature),
                  "tta": tta}
        return _validate(fields, source="package description", error=RegistryError)

    # ------------------------------------------------------------------ reading

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any], *, source: str | Path = "checkpoint") -> ModelMeta:
        """The metadata a checkpoint payload holds (migrated when an older plantpheno wrote it)."""
        data = checkpoint.get("meta")
        if not isinstance(data, dict):
            raise RunDirError(f"{source} holds no model metadata ('meta'); it was not written by plantpheno train")
        return _validate(migrate_meta(data, source=source, error=RunDirError), source=source, error=RunDirError)


def build_model_meta(*, task: dict[str, Any], backbone: str, image_size: int, resize: str,
                     mean: tuple[float, ...], std: tuple[float, ...], dataset_fingerprint: str | None,
                     plantpheno_version: str, bands: dict[str, Any] | None = None,
                     parent_model: dict[str, Any] | None = None) -> ModelMeta:
    """A new run's metadata: ``task`` is the task's own description (``Task.to_meta()``: task, num_outputs, class
    names or trait scaling, counts), then the backbone and the preprocessing; ``bands`` the ``data.bands`` block
    (None: RGB), ``parent_model`` the lineage of ``model.init_from`` (None: none)."""
    fields = {"meta_version": META_VERSION, "plantpheno_version": plantpheno_version, **task, "backbone": backbone,
              "image_size": image_size, "resize": resize, "mean": [float(v) for v in mean],
              "std": [float(v) for v in std], "bands": bands or "RGB", "dataset_fingerprint": dataset_fingerprint}
    if parent_model is not None:
        fields["parent_model"] = parent_model
    return _validate(fields, source="model metadata", error=RunDirError)


def migrate_meta(data: dict[str, Any], *, source: str | Path,
                 error: type[PlantPhenoError] = RegistryError) -> dict[str, Any]:
    """The one migration: metadata written by an older plantpheno, in the current version's fields.

    Version 1 (no ``meta_version``) recorded no ``bands`` (always RGB) and, before ``data.resize`` existed, no
    ``resize`` (always the centre crop). What else older files lack (``counts``, ``temperature``, ``tta``) has a
    default that means what those versions did. A version newer than this plantpheno's is refused rather than
    half-read."""
    version = data.get("meta_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= META_VERSION:
        raise error(f"{source}: meta_version {short_repr(version)}; this plantpheno reads versions 1 to "
                    f"{META_VERSION} (a newer plantpheno wrote it: upgrade to use it)")
    if version == 1:
        data = {**data, "meta_version": 2, "bands": data.get("bands", "RGB"), "resize": data.get("resize", "crop")}
    return data


def read_meta(path: Path, *, expected_format: str) -> ModelMeta:
    """The package description at ``path``, checked and migrated.

    Raises:
        RegistryError: naming the file, each bad field, what it held and what was expected.
    """
    try:
        size = path.stat().st_size
        if size > MAX_META_BYTES:
            raise RegistryError(f"{path}: {size:,} bytes; a package description holds at most {MAX_META_BYTES:,}")
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RegistryError(f"{path} is not valid JSON ({exc}); the package is damaged: register the run "
                            f"again") from None
    except RecursionError:
        raise RegistryError(f"{path} is nested too deeply to be a package description") from None
    except OSError as exc:
        raise RegistryError(f"{path} cannot be read ({exc.strerror or exc})") from None
    if not isinstance(data, dict):
        raise RegistryError(f"{path} holds a JSON {type(data).__name__}; expected an object of fields (backbone, "
                            f"task, class_names, ...)")
    if data.get("format") != expected_format:
        raise RegistryError(f"{path}: unsupported package format {short_repr(data.get('format'))}; expected "
                            f"{expected_format}")
    meta = _validate(migrate_meta(data, source=path), source=path, error=RegistryError,
                     remedy="; the package is damaged or was edited: register the run again")
    return meta


def _validate(data: dict[str, Any], *, source: str | Path, error: type[PlantPhenoError],
              remedy: str = "") -> ModelMeta:
    try:
        return ModelMeta.model_validate(data)
    except ValidationError as exc:
        raise error(f"{source}: {_problems(exc)}{remedy}") from None


def _problems(exc: ValidationError) -> str:
    """Each problem as ``field: what was wrong (got VALUE)``, joined."""
    found = []
    for error in exc.errors(include_url=False):
        field = ".".join(str(part) for part in error["loc"])
        what = error["msg"].removeprefix("Value error, ")
        if field:
            got = "" if error["type"] == "missing" else f" (got {short_repr(error.get('input'), 80)})"
            found.append(f"{field}: {what}{got}")
        else:
            found.append(what)
    return "; ".join(found)
