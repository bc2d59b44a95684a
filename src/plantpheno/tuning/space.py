"""Search spaces: which config fields a study varies, and over which values.

A space maps dotted config fields to a distribution, written in YAML as

```yaml
training.learning_rate: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
data.batch_size: {type: int, low: 8, high: 32, step: 8}
training.optimizer: {type: categorical, choices: [adamw, sgd]}
model.dropout: [0.0, 0.2, 0.4]          # a plain list: grid values (or choices for random/tpe)
```

:func:`parse_space` checks the form of every entry, :func:`check_space` checks them against the
training schema (known field, every extreme value and every choice accepted by
:func:`~plantpheno.config.validate_config`) before any trial runs. This module does not import
optuna: it is only touched by :meth:`SearchSpace.suggest`, with the trial it is given.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from plantpheno.config import Config, config_to_dict, field_docs, validate_config
from plantpheno.errors import ConfigError

Scalar = str | int | float | bool | None
# Set by the tuner itself for every trial; a space may not vary them.
MANAGED_FIELDS = frozenset({"output_dir", "experiment", "run_name", "tracking.mlflow.parent_run_id",
                            "tracking.wandb.group", "evaluation.split", "registry.name",
                            "evaluation.ood.enabled"})
MAX_GRID = 100_000
_INTERIOR = 0.381966  # an interior point that is almost never a round number (catches float ranges on int fields)


@dataclass(frozen=True)
class FloatRange:
    """``{type: float, low, high, log?, step?, grid_points?}``: a real number in [low, high].

    ``grid_points: N`` is what ``--sampler grid`` takes from a range without a step: N values from low to high,
    evenly spaced (geometrically with ``log: true``: 1e-4, 1e-3, 1e-2); random and TPE sample the whole range."""

    field: str
    low: float
    high: float
    log: bool = False
    step: float | None = None
    grid_points: int | None = None

    def check_values(self) -> tuple[float, ...]:
        if self.step is not None:
            inner = self.low + self.step if self.low + self.step <= self.high else self.low
        elif self.log:
            inner = math.exp(math.log(self.low) + _INTERIOR * (math.log(self.high) - math.log(self.low)))
        else:
            inner = self.low + _INTERIOR * (self.high - self.low)
        return (self.low, inner, self.high)

    def grid_size(self) -> int | None:
        """How many values :meth:`grid_values` holds, without making them (None: not a grid)."""
        if self.step is not None:
            return round((self.high - self.low) / self.step) + 1
        return self.grid_points

    def grid_values(self) -> tuple[float, ...] | None:
        if self.step is not None:
            count = round((self.high - self.low) / self.step) + 1
            return tuple(round(self.low + i * self.step, 12) for i in range(count))
        if self.grid_points is None:
            return None
        n = self.grid_points
        if self.log:
            lo, hi = math.log(self.low), math.log(self.high)
            return tuple(float(f"{math.exp(lo + i * (hi - lo) / (n - 1)):.12g}") for i in range(n))
        return tuple(float(f"{self.low + i * (self.high - self.low) / (n - 1):.12g}") for i in range(n))

    def suggest(self, trial: Any) -> float:
        return trial.suggest_float(self.field, self.low, self.high, log=self.log, step=self.step)

    def to_yaml(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "float", "low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        if self.grid_points is not None:
            out["grid_points"] = self.grid_points
        return out

    def describe(self) -> str:
        scale = ", log scale" if self.log else f", step {self.step}" if self.step else ""
        grid = f" ({self.grid_points} points in a grid)" if self.grid_points is not None else ""
        return f"float in [{self.low:g}, {self.high:g}]{scale}{grid}"


@dataclass(frozen=True)
class IntRange:
    """``{type: int, low, high, step?, log?}``: an integer in [low, high]."""

    field: str
    low: int
    high: int
    step: int = 1
    log: bool = False

    def check_values(self) -> tuple[int, ...]:
        return (self.low, self.high)

    def grid_size(self) -> int:
        return (self.high - self.low) // self.step + 1

    def grid_values(self) -> tuple[int, ...]:
        return tuple(range(self.low, self.high + 1, self.step))

    def suggest(self, trial: Any) -> int:
        return trial.suggest_int(self.field, self.low, self.high, step=self.step, log=self.log)

    def to_yaml(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "int", "low": self.low, "high": self.high}
        if self.step != 1:
            out["step"] = self.step
        if self.log:
            out["log"] = True
        return out

    def describe(self) -> str:
        scale = ", log scale" if self.log else f", step {self.step}" if self.step != 1 else ""
        return f"int in [{self.low}, {self.high}]{scale}"


@dataclass(frozen=True)
class Choice:
    """``{type: categorical, choices: [...]}`` or a plain list ``[...]``: one of the given values."""

    field: str
    choices: tuple[Scalar, ...]
    plain_list: bool = False

    def check_values(self) -> tuple[Scalar, ...]:
        return self.choices

    def grid_size(self) -> int:
        return len(self.choices)

    def grid_values(self) -> tuple[Scalar, ...]:
        return self.choices

    def suggest(self, trial: Any) -> Scalar:
        return trial.suggest_categorical(self.field, list(self.choices))

    def to_yaml(self) -> Any:
        return list(self.choices) if self.plain_list else {"type": "categorical", "choices": list(self.choices)}

    def describe(self) -> str:
        return "one of " + ", ".join(repr(c) for c in self.choices)


Param = FloatRange | IntRange | Choice


@dataclass(frozen=True)
class SearchSpace:
    """The fields a study varies, in the order written."""

    params: tuple[Param, ...]

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(p.field for p in self.params)

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Ask an Optuna trial for one value per field (fixed values of an enqueued trial come back as is)."""
        return {p.field: p.suggest(trial) for p in self.params}

    def grid(self, *, limit: int = MAX_GRID) -> list[dict[str, Any]]:
        """Every combination of the fields' values (first field slowest), for ``--sampler grid``."""
        problems = [f"space.{p.field}: got {p.to_yaml()!r}; expected a list of values, a categorical, an int "
                    f"range, or a float range with a step or grid_points: N (--sampler grid enumerates every value)"
                    for p in self.params if p.grid_size() is None]
        if problems:
            raise ConfigError("invalid search space for --sampler grid:\n  " + "\n  ".join(problems))
        # counted before any value is made: a range of 4 billion integers was a MemoryError, 10^8 points a hang
        size = math.prod(p.grid_size() for p in self.params)
        if size > limit:
            raise ConfigError(f"the grid has {size:,} combinations, more than {limit:,}; use --sampler random or "
                              f"tpe, or fewer values")
        values = [p.grid_values() for p in self.params]
        return [dict(zip(self.fields, combo, strict=True)) for combo in itertools.product(*values)]

    def to_yaml(self) -> dict[str, Any]:
        return {p.field: p.to_yaml() for p in self.params}

    def describe(self) -> list[str]:
        return [f"{p.field}: {p.describe()}" for p in self.params]


def apply_values(raw: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of a raw config mapping with ``{"a.b": value}`` set (sections created as needed)."""
    out = copy.deepcopy(dict(raw))
    for dotted, value in values.items():
        *sections, leaf = dotted.split(".")
        node = out
        for part in sections:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


# ----------------------------------------------------------------------------------------------
# Parsing and checking
# ----------------------------------------------------------------------------------------------


def parse_space(raw: Any, *, source: str = "search space") -> SearchSpace:
    """Build a :class:`SearchSpace` from its YAML mapping; every malformed entry is reported at once.

    Raises:
        ConfigError: naming each bad field, its value and what was expected.
    """
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(f"invalid search space ({source}): got {raw!r}; expected a non-empty mapping of "
                          f"dotted config fields to distributions, e.g. training.learning_rate: "
                          f"{{type: float, low: 1.0e-4, high: 1.0e-2, log: true}}")
    params, problems = [], []
    for field, spec in raw.items():
        try:
            params.append(_parse_param(str(field), spec))
        except ValueError as exc:
            problems.append(f"space.{field}: got {spec!r}; expected {exc}")
    if problems:
        raise ConfigError(f"invalid search space ({source}):\n  " + "\n  ".join(problems))
    return SearchSpace(tuple(params))


_KEYS = {"float": {"type", "low", "high", "log", "step", "grid_points"}, "int": {"type", "low", "high", "step", "log"},
         "categorical": {"type", "choices"}}


def _parse_param(field: str, spec: Any) -> Param:
    if isinstance(spec, list):
        return Choice(field, _choices(spec), plain_list=True)
    if not isinstance(spec, Mapping):
        raise ValueError("a list of values, or a mapping with type: float | int | categorical")  # noqa: TRY004
    kind = spec.get("type")
    if kind not in _KEYS:
        raise ValueError(f"type: float, int or categorical (got type: {kind!r})")
    unknown = sorted(set(spec) - _KEYS[kind])
    if unknown:
        raise ValueError(f"only the keys {', '.join(sorted(_KEYS[kind]))} for type: {kind} "
                         f"(unknown: {', '.join(map(str, unknown))})")
    if kind == "categorical":
        return Choice(field, _choices(spec.get("choices")))
    low, high, log = spec.get("low"), spec.get("high"), spec.get("log", False)
    if not isinstance(log, bool):
        raise ValueError(f"log: true or false (got log: {log!r})")  # noqa: TRY004
    if kind == "int":
        return _int_range(field, low, high, spec.get("step", 1), log)
    return _float_range(field, low, high, spec.get("step"), log, spec.get("grid_points"))


def _number(name: str, value: Any, *, integer: bool) -> float:
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if not ok or isinstance(value, bool) or (isinstance(value, float) and not math.isfinite(value)):
        raise ValueError(f"{name} to be {'an integer' if integer else 'a finite number'} (got {name}={value!r})")
    return value


def _bounds(low: Any, high: Any, *, integer: bool, log: bool) -> None:
    _number("low", low, integer=integer)
    _number("high", high, integer=integer)
    if low > high:
        raise ValueError(f"low <= high must hold, but got (low={low}, high={high})")
    if log and low <= 0:
        raise ValueError(f"low > 0 for a log scale, but got (low={low}, high={high})")


def _int_range(field: str, low: Any, high: Any, step: Any, log: bool) -> IntRange:
    _bounds(low, high, integer=True, log=log)
    _number("step", step, integer=True)
    if step < 1:
        raise ValueError(f"step >= 1 (got step={step})")
    if log and step != 1:
        raise ValueError(f"either log: true or a step, not both (got step={step})")
    if (high - low) % step:
        raise ValueError(f"high - low to be a multiple of step, but got (low={low}, high={high}, step={step})")
    return IntRange(field, low, high, step, log)


def _float_range(field: str, low: Any, high: Any, step: Any, log: bool, grid_points: Any = None) -> FloatRange:
    _bounds(low, high, integer=False, log=log)
    if grid_points is not None:
        _number("grid_points", grid_points, integer=True)
        if grid_points < 2 or step is not None:
            raise ValueError(f"grid_points >= 2 and no step (got grid_points={grid_points}, step={step})")
        if grid_points > MAX_GRID:  # a grid of more combinations is refused anyway, before its values are made
            raise ValueError(f"grid_points <= {MAX_GRID:,} (got grid_points={grid_points:,})")
    if step is not None:
        _number("step", step, integer=False)
        if step <= 0:
            raise ValueError(f"step > 0 (got step={step})")
        if log:
            raise ValueError(f"either log: true or a step, not both (got step={step})")
        if abs((high - low) / step - round((high - low) / step)) > 1e-9:
            raise ValueError(f"high - low to be a multiple of step, but got (low={low}, high={high}, step={step})")
    return FloatRange(field, float(low), float(high), log, None if step is None else float(step), grid_points)


def _choices(values: Any) -> tuple[Scalar, ...]:
    if not isinstance(values, list) or not values:
        raise ValueError("a non-empty list of values")
    bad = [v for v in values if not (v is None or isinstance(v, (str, int, float, bool)))]
    if bad:
        raise ValueError(f"single values (numbers, strings, true/false, null), not {bad[0]!r}")
    if len({(type(v), v) for v in values}) != len(values):
        raise ValueError("distinct values")
    return tuple(values)


def check_space(space: SearchSpace, config: Config, *, source: str = "search space") -> None:
    """Check every field against the training schema before any trial runs.

    Each field must be a config field the tuner does not manage, and each extreme value (low, high,
    an interior point of a float range) and every choice must be accepted by
    :func:`~plantpheno.config.validate_config` when set on ``config``.

    Raises:
        ConfigError: one line per problem, naming the field, the value and what was expected.
    """
    known = [name for name, *_ in field_docs()]
    base = config_to_dict(config)
    problems: list[str] = []
    for param in space.params:
        if param.field not in known:
            problems.append(f"space.{param.field}: unknown config field; expected one of: "
                            f"{', '.join(_siblings(param.field, known))}")
        elif param.field in MANAGED_FIELDS:
            problems.append(f"space.{param.field}: set by the tuner for each trial; expected another field")
        else:
            problems.extend(_rejected_values(param, base))
    if problems:
        raise ConfigError(f"invalid search space ({source}):\n  " + "\n  ".join(problems))


def _rejected_values(param: Param, base: dict[str, Any]) -> list[str]:
    problems = []
    for value in param.check_values():
        try:
            validate_config(apply_values(base, {param.field: value}))
        except ConfigError as exc:
            reasons = str(exc).split("\n", 1)[-1].strip().replace("\n  ", "; ")
            problems.append(f"space.{param.field}: value {value!r} ({param.describe()}) is rejected by the "
                            f"training config: {reasons}")
    return problems


def _siblings(field: str, known: list[str]) -> list[str]:
    section = field.rpartition(".")[0]
    same = [k for k in known if k.rpartition(".")[0] == section] if section else []
    if same:
        return same
    return sorted({k.split(".")[0] for k in known})
