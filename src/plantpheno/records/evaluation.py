"""One evaluation of a split, as ``eval/<split>/metrics.json`` holds it: its one home.

The file keeps the layout it always had (a flat JSON object: ``task``, ``headline_metric``, every metric of the
task by name, ``confidence_interval``, ``baseline`` with its ``verdict``, ``calibration``, ``tta``, per-class rows),
so runs written before this record existed read unchanged and readers outside plantpheno keep working. Inside
plantpheno it is read only through :class:`Evaluation`: a renamed field then fails where the record is parsed, not
far away in a report.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from plantpheno.errors import RunDirError

BETTER = "better"  # the verdict's word when the model clearly beats its trivial baseline
# Fields of an evaluation that are bookkeeping or structure, not a metric value (see Evaluation.values).
NOT_METRICS = frozenset({"num_samples", "num_images", "checkpoint_epoch", "split", "task", "headline_metric"})


class _Record(BaseModel):
    """Frozen; unknown fields kept (files written by a newer plantpheno, or extra figures) and written back."""

    model_config = ConfigDict(frozen=True, extra="allow")

    def to_dict(self) -> dict[str, Any]:
        """The JSON object this record is stored as (fields never set are left out, as the file had them)."""
        return self.model_dump(mode="json", exclude_unset=True, by_alias=True)


class Interval(_Record):
    """A bootstrap confidence interval of one metric (``low``/``high`` are None where it could not be computed)."""

    metric: str | None = None
    estimate: float | None = None
    low: float | None = None
    high: float | None = None
    confidence: float = 0.95
    n_resamples: int | None = None
    method: str | None = None

    @property
    def known(self) -> bool:
        return self.low is not None and self.high is not None


class Verdict(_Record):
    """The paired verdict of the model against its trivial baseline (:mod:`plantpheno.evaluation.baselines`)."""

    metric: str
    model: float | None = None
    baseline: float | None = None
    improvement: Interval | None = None
    verdict: str
    text: str = ""

    @property
    def is_better(self) -> bool:
        return self.verdict == BETTER


class Baseline(_Record):
    """The trivial predictor a model must beat: its kind, its scores by metric name (extra fields such as
    ``accuracy`` or ``mae``), the majority class or the training mean it predicts, and the verdict."""

    kind: str = "trivial predictor"
    verdict: Verdict | None = None
    majority_class: str | None = None
    value: float | None = None  # a trait baseline: the training mean it always predicts
    stratified: dict[str, Any] | None = None

    def score(self, metric: str) -> float | None:
        """The baseline's figure for ``metric`` (``accuracy``, ``mae`` ...), None where it has none."""
        value = (self.model_extra or {}).get(metric)
        return float(value) if _is_number(value) else None

    @property
    def stratified_accuracy(self) -> float | None:
        value = (self.stratified or {}).get("accuracy")
        return float(value) if _is_number(value) else None

    def predictor_text(self) -> str:
        """The trivial predictor in words."""
        if self.majority_class is not None:
            return f"always the most frequent training class ({self.majority_class})"
        if self.value is not None:
            return f"always the training mean ({self.value:.4g})"
        return self.kind


class CalibrationScores(_Record):
    ece: float | None = None
    mce: float | None = None
    brier: float | None = None
    nll: float | None = None
    mean_confidence: float | None = None
    accuracy: float | None = None

    def row(self) -> tuple[float | None, ...]:
        return (self.ece, self.mce, self.brier, self.nll, self.mean_confidence, self.accuracy)


class Calibration(_Record):
    """Calibration of a classifier's probabilities before and (when a temperature was applied) after scaling."""

    bins: int | None = None
    binning: str = ""
    before: CalibrationScores | None = None
    after: CalibrationScores | None = None
    temperature: float | None = None
    fitted_on: str | None = None
    not_applied: str | None = None
    ece_change: Interval | None = None


class TestTimeAugmentation(_Record):
    """Scores with and without test-time augmentation, on the evaluated split and on validation."""

    mode: str
    views: list[str] = []
    with_: dict[str, float] | None = Field(default=None, alias="with")
    without: dict[str, float] | None = None
    val: dict[str, Any] | None = None

    model_config = ConfigDict(frozen=True, extra="allow", populate_by_name=True)

    def rows(self) -> list[tuple[str, dict[str, float]]]:
        """``(label, scores)`` for the evaluated split and validation, with and without TTA, where present."""
        val = self.val or {}
        found = [("evaluated with", self.with_), ("evaluated without", self.without),
                 ("val with", val.get("with")), ("val without", val.get("without"))]
        return [(label, scores) for label, scores in found if scores]


class PerClass(_Record):
    precision: list[float] = []
    recall: list[float] = []
    f1: list[float] = []
    support: list[int] = []


class Share(_Record):
    """``count`` of ``num_images`` images (flagged unknown, or answered right), its fraction and Wilson interval."""

    count: int
    num_images: int
    fraction: float | None = None
    low: float | None = None
    high: float | None = None
    confidence: float = 0.95
    method: str = "Wilson"


class Separation(_Record):
    """How far the OOD score tells the run's in-source test images from another source's (AUROC: the chance that an
    image of the other source scores higher; FPR95: the share of the other source's images taken as known at the
    threshold that keeps 95 % of the test images), with percentile-bootstrap intervals."""

    in_source: str = "test"
    num_in_source: int
    num_other: int
    auroc: Interval
    fpr95: Interval


class Unknowns(_Record):
    """The run's OOD detector (fitted on train/val) applied to an evaluation's images: the share it flags unknown,
    accuracy on the images it keeps and on those it flags, on the validation split the share its threshold flags
    there (``1 - keep`` up to ties), and on another source the separation from the in-source test split."""

    score: str
    threshold: float
    keep: float
    fitted_on: str = "train/val"
    flagged: Share
    val: Share | None = None
    known_accuracy: Share | None = None  # among the images kept as known (count: answered right)
    unknown_accuracy: Share | None = None  # among the images flagged unknown
    expected_unknown_flagged: Share | None = None  # another source: its images without a run class, flagged
    separation: Separation | None = None
    no_separation: str | None = None  # why there is none (no in-source test images in the split manifest)


class Evaluation(_Record):
    """One evaluation of a split. Metric values (``accuracy``, ``mae`` ...) are :attr:`values` by name."""

    task: str
    headline_metric: str
    split: str | None = None
    num_images: int | None = None
    num_samples: int | None = None
    checkpoint_epoch: int | None = None
    class_names: list[str] | None = None
    per_class: PerClass | None = None
    confusion_matrix: list[list[int]] | None = None
    confidence_interval: Interval | None = None
    baseline: Baseline | None = None
    calibration: Calibration | None = None
    tta: TestTimeAugmentation | None = None
    # an evaluation on another source (plantpheno evaluate RUN --data): what the source held, the figures of the
    # shift from the in-source test split, how far a border classifier tells the sources apart, the worst errors.
    # Plain mappings as plantpheno.evaluation.shift computes them; None on a split's own evaluation.
    source: dict[str, Any] | None = None
    shift: dict[str, Any] | None = None
    separability: dict[str, Any] | None = None
    worst_errors: list[dict[str, Any]] | None = None
    # the run's OOD detector on these images (None: the run has none, or it is not a split or source evaluation)
    unknowns: Unknowns | None = None

    @property
    def is_other_source(self) -> bool:
        """Whether this is an evaluation on another source (it has the figures of the shift)."""
        return self.shift is not None

    @property
    def values(self) -> dict[str, float]:
        """Every metric value by name (bookkeeping counts left out); a metric that was not finite is absent."""
        return {k: float(v) for k, v in (self.model_extra or {}).items() if _is_number(v) and k not in NOT_METRICS}

    def counts_and_values(self) -> dict[str, float]:
        """Every top-level number: the metric values and the counts (images, samples, checkpoint epoch), as a
        tracker logs them."""
        fields = {"num_images": self.num_images, "num_samples": self.num_samples,
                  "checkpoint_epoch": self.checkpoint_epoch}
        top = {**(self.model_extra or {}), **{k: v for k, v in fields.items() if k in self.model_fields_set}}
        return {k: v for k, v in top.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}

    def value(self, metric: str) -> float | None:
        return self.values.get(metric)

    @property
    def headline(self) -> float | None:
        return self.value(self.headline_metric)

    @property
    def verdict(self) -> Verdict | None:
        """The verdict against the trivial baseline, None when there was none."""
        return self.baseline.verdict if self.baseline is not None else None

    @property
    def interval(self) -> Interval | None:
        """The headline's confidence interval where it could be computed."""
        ci = self.confidence_interval
        return ci if ci is not None and ci.known else None

    def headline_summary(self) -> dict[str, Any]:
        """The headline metric and its interval, as ``run.json`` keeps them (``{name: value,
        "confidence_interval": {...}}``)."""
        ci = self.confidence_interval
        return {self.headline_metric: self.headline, "confidence_interval": ci.to_dict() if ci else None}

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str | Path = "evaluation") -> Evaluation:
        """An evaluation from its JSON object (as written by :meth:`to_json`, or by any earlier plantpheno)."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise RunDirError(f"{source}: not an evaluation plantpheno can read ({_problems(exc)})") from None

    def to_json(self) -> str:
        """The file's text; NaN and infinity become null (JSON has neither)."""
        return json.dumps(_finite(self.to_dict()), indent=2) + "\n"


class BaselineSummary(_Record):
    """A trial's final evaluation against its trivial baseline, as a tuning study keeps it (an Optuna user
    attribute and ``best.json``): the baseline's kind, the split, its figure on the study's metric, the verdict."""

    kind: str | None = None
    split: str | None = None
    value: float | None = None
    verdict: str | None = None
    text: str | None = None

    @property
    def known(self) -> bool:
        return bool(self.verdict)

    @property
    def is_better(self) -> bool:
        return self.verdict == BETTER

    @classmethod
    def of(cls, evaluation: Evaluation, *, metric: str) -> BaselineSummary | None:
        """The summary of ``evaluation``'s baseline and verdict, its figure on ``metric`` (a bare metric name such
        as ``accuracy``: None where the baseline has none, as for the loss); None without a verdict."""
        baseline, verdict = evaluation.baseline, evaluation.verdict
        if baseline is None or verdict is None:
            return None
        return cls(kind=baseline.kind, split=evaluation.split, value=baseline.score(metric), verdict=verdict.verdict,
                   text=verdict.text)

    @classmethod
    def read(cls, data: Any) -> BaselineSummary | None:
        """A stored summary (None, or one not in this shape, reads as not known)."""
        try:
            return cls.model_validate(data) if isinstance(data, dict) else None
        except ValidationError:
            return None


def build_evaluation(*, task: str, headline_metric: str, metrics: dict[str, Any],
                     extra: dict[str, Any] | None = None) -> Evaluation:
    """The record of a finished evaluation: the task's metrics (with ``confidence_interval``, ``per_class`` ...)
    and ``extra`` (split, counts, baseline, calibration, TTA), in the file's order."""
    return Evaluation.model_validate({"task": task, "headline_metric": headline_metric, **metrics, **(extra or {})})


def read_evaluation(path: Path) -> Evaluation:
    """The evaluation at ``path`` (``eval/<split>/metrics.json``).

    Raises:
        RunDirError: the file is missing, is not JSON, or is not an evaluation (naming the file and the field).
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirError(f"{path} does not exist; evaluate the run first (plantpheno evaluate RUN_DIR)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunDirError(f"{path} cannot be read as JSON ({exc}); evaluate the run again") from None
    if not isinstance(data, dict):
        raise RunDirError(f"{path} holds a JSON {type(data).__name__}; expected an evaluation object")
    return Evaluation.from_dict(data, source=path)


def headline_of(data: Any) -> tuple[dict[str, float], str | None, tuple[float, float] | None]:
    """The metric values, the headline metric's name and its interval ``(low, high)`` in an evaluation's JSON
    object, or in ``run.json``'s headline summary (:meth:`Evaluation.headline_summary`), read leniently: a run
    listing shows what it can of a damaged or foreign file rather than fail, so what is unreadable is left out."""
    data = data if isinstance(data, dict) else {}
    values = {k: float(v) for k, v in data.items() if k not in NOT_METRICS and isinstance(v, (int, float))
              and not isinstance(v, bool)}
    raw_ci = data.get("confidence_interval")
    try:
        ci = Interval.model_validate(raw_ci) if isinstance(raw_ci, dict) else None
    except ValidationError:
        ci = None
    headline = data.get("headline_metric")
    headline = headline if isinstance(headline, str) and headline else (ci.metric if ci is not None else None)
    if headline is None and len(values) == 1:
        headline = next(iter(values))
    return values, headline, (ci.low, ci.high) if ci is not None and ci.known else None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _problems(exc: ValidationError) -> str:
    """Each problem as ``field: what was wrong``, joined."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'record'}: {e['msg']}"
                     for e in exc.errors(include_url=False))
