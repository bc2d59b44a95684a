"""The tuning file: a ``tuning:`` section (how to search) and a ``space:`` section (what to vary).

```yaml
tuning:
  sampler: tpe            # grid | random | tpe
  pruner: median          # median | hyperband | none
  trials: 30              # grid: default and maximum = the number of combinations
  metric: val/macro_f1    # default: the config's training.monitor
space:
  training.learning_rate: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
```

Command-line flags override the ``tuning:`` values (:func:`merge_settings`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from plantpheno.errors import ConfigError, short_repr
from plantpheno.recipes import resolve as resolve_recipe
from plantpheno.tuning.space import SearchSpace, parse_space
from plantpheno.files.yamlfile import read_yaml_mapping

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class TuneSettings(BaseModel):
    """How a study searches; every field can also be given on the command line."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        from plantpheno.config import no_bool_numbers

        return no_bool_numbers(cls, value, info)

    study: str | None = Field(None, pattern=NAME_PATTERN,
                              description="Study name and folder (OUTPUT_DIR/<experiment>/<study>); "
                                          "default: the tuning file's name.")
    sampler: Literal["grid", "random", "tpe"] = Field("tpe", description="How trials pick values.")
    pruner: Literal["median", "hyperband", "none"] = Field(
        "median", description="Stop unpromising trials early (after min_epochs), from per-epoch values.")
    metric: str | None = Field(None, description="Objective: best value over epochs; default training.monitor.")
    direction: Literal["maximize", "minimize"] | None = Field(
        None, description="Default from the metric (loss, mae, rmse: minimize; others: maximize).")
    trials: int | None = Field(None, ge=1, le=1_000_000,
                               description="Trials in the study (all workers together); grid: default "
                                           "all combinations, random/tpe: default 20.")
    timeout: float | None = Field(None, gt=0, description="Seconds after which a worker starts no new trial.")
    storage: str | None = Field(None, description="journal:///path.log, sqlite:///path.db, postgresql://...; "
                                                  "default: a journal file in the study folder.")
    startup_trials: int = Field(5, ge=0, description="Random trials before TPE models the results, and "
                                                     "complete trials before the median pruner prunes.")
    min_epochs: int = Field(1, ge=1, description="Epochs every trial runs before it can be pruned.")
    seed: int | None = Field(None, ge=0, description="Sampler seed; default: the config's seed.")
    heartbeat_interval: float = Field(30.0, gt=0, description="Seconds between a running trial's heartbeats.")
    grace_period: float = Field(600.0, gt=0, description="A running trial of another machine without heartbeat "
                                                         "for this long is failed and retried.")


def load_tuning_file(path: str | Path) -> tuple[SearchSpace, TuneSettings]:
    """Read a tuning YAML file (``tuning:`` and ``space:`` sections), or a packaged search space by name
    (``tune/demo_space``).

    Raises:
        ConfigError: for a missing/invalid file, an unknown section, or invalid settings or space.
    """
    path = resolve_recipe(path, kind="space")
    data = read_yaml_mapping(path, kind="tuning file")
    if "space" not in data:
        raise ConfigError(f"tuning file {path}: no space: section; expected a mapping with a space: section "
                          f"(and optionally tuning:)")
    unknown = sorted(set(data) - {"tuning", "space"})
    if unknown:
        raise ConfigError(f"tuning file {path}: unknown section(s) {', '.join(map(str, unknown))}; "
                          f"expected tuning and space")
    raw_settings = data.get("tuning") or {}
    if not isinstance(raw_settings, dict):
        raise ConfigError(f"tuning file {path}: tuning: got {raw_settings!r}; expected a mapping")
    settings = _validate(raw_settings, source=str(path))
    if settings.study is None and _valid_name(path.stem):
        settings = settings.model_copy(update={"study": path.stem})
    return parse_space(data["space"], source=str(path)), settings


def merge_settings(settings: TuneSettings, overrides: dict[str, Any]) -> TuneSettings:
    """``settings`` with the given (non-None) values replaced, validated again (command-line flags win)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    return _validate({**settings.model_dump(), **given}, source="command line")


def tuning_yaml(space: SearchSpace, settings: TuneSettings) -> str:
    """A tuning file holding ``settings`` and ``space`` (loadable by :func:`load_tuning_file`)."""
    tuning = {k: v for k, v in settings.model_dump().items() if v is not None}
    return yaml.safe_dump({"tuning": tuning, "space": space.to_yaml()}, sort_keys=False, default_flow_style=None)


def _valid_name(name: str) -> bool:
    return re.fullmatch(NAME_PATTERN, name) is not None


def _validate(raw: dict[str, Any], *, source: str) -> TuneSettings:
    try:
        return TuneSettings.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = "tuning." + ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                lines.append(f"{field}: unknown setting; expected one of: {', '.join(TuneSettings.model_fields)}")
                continue
            msg = err["msg"].removeprefix("Value error, ").removeprefix("Input should be ")
            lines.append(f"{field}: got {short_repr(err.get('input'))}; expected {msg[:1].lower() + msg[1:]}")
        raise ConfigError(f"invalid tuning settings ({source}):\n  " + "\n  ".join(lines)) from None
