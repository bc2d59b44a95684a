"""The schema of a model package's ``plantpheno_model.json``, checked when a package is opened.

A package travels (registry downloads, copied folders, hand edits), so its description is untrusted input: a
tampered file made tracebacks (a list, a missing backbone, class names that do not match the head) or wrong
answers without a word (a negative temperature flips every predicted class). Every field the model is rebuilt
and applied from is checked here, each problem named by its field with what was expected. Fields that are only
shown (lineage, test metrics) are kept as they are, and so are unknown ones: packages written by earlier
versions, which lack ``resize``, ``temperature`` or ``tta``, still load.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, ValidationError, model_validator

from plantpheno.errors import RegistryError, short_repr

MAX_META_BYTES = 16 << 20  # a description is a few KB; 16 MiB allows a package with very many classes
Number = StrictFloat  # an int or a float; not a bool, not text such as "hot"


class BandsMeta(BaseModel):
    """``bands``: what a model of ``data.bands`` reads and how it scales each band (data/bands.py writes it)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    specs: list[dict[str, Any]] = Field(min_length=1, max_length=64)
    names: list[str] = Field(min_length=1, max_length=64)
    low: list[Number]
    high: list[Number]
    mean: list[Number]
    std: list[Number]

    @model_validator(mode="after")
    def _consistent(self) -> BandsMeta:
        count = len(self.names)
        if len(self.specs) != count or any(len(v) != count for v in (self.low, self.high, self.mean, self.std)):
            raise ValueError(f"bands: specs, low, high, mean and std need one entry per band name ({count})")
        if min(self.std) <= 0:
            raise ValueError(f"bands.std: got {self.std}; expected values > 0")
        return self


class PackageMeta(BaseModel):
    """What a package must say for its model to be rebuilt and applied."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    format: str
    backbone: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_./-]*$")
    task: Literal["classification", "regression"]
    num_outputs: StrictInt = Field(ge=1, le=1_000_000)
    class_names: list[str] | None = None
    target_mean: Number | None = None
    target_std: Number | None = None
    counts: bool = False
    image_size: StrictInt = Field(ge=16, le=2048)
    resize: Literal["crop", "pad", "stretch"] = "crop"
    mean: tuple[Number, Number, Number]
    std: tuple[Number, Number, Number]
    temperature: Number | None = None
    tta: Literal["none", "flips", "d4"] | None = None
    bands: BandsMeta | None = None  # a model of data.bands (absent: RGB)

    @model_validator(mode="after")
    def _consistent(self) -> PackageMeta:
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


def read_meta(path: Path, *, expected_format: str) -> dict[str, Any]:
    """The description at ``path``, checked (:class:`PackageMeta`); returned as the plain mapping it holds.

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
    try:
        PackageMeta.model_validate(data)
    except ValidationError as exc:
        raise RegistryError(f"{path}: {_problems(exc)}; the package is damaged or was edited: register the run "
                            f"again") from None
    return data


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
