"""A study resolved before anything runs: name, folder, storage, objective, budget, and trial configs."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from plantpheno.config import Config, config_to_dict, validate_config
from plantpheno.errors import ConfigError
from plantpheno.tuning.settings import TuneSettings
from plantpheno.tuning.space import SearchSpace, apply_values, check_space

DEFAULT_TRIALS = 20
JOURNAL_FILE = "study.log"


@dataclass(frozen=True)
class StudyPlan:
    """Everything a tuning process needs, resolved and checked; the same in every worker."""

    config: Config  # the base training config (file + overrides)
    space: SearchSpace
    settings: TuneSettings  # study, metric, direction, trials, storage and seed filled in
    study_dir: Path
    grid: tuple[dict[str, Any], ...] | None  # the combinations to run, for sampler grid
    grid_size: int | None = None  # all combinations of the space (grid may hold a seeded sample of them)

    @property
    def name(self) -> str:
        return str(self.settings.study)

    @property
    def metric(self) -> str:
        return str(self.settings.metric)

    @property
    def direction(self) -> Literal["maximize", "minimize"]:
        return self.settings.direction or "maximize"

    @property
    def n_trials(self) -> int:
        return int(self.settings.trials or 0)

    @property
    def storage_url(self) -> str:
        return str(self.settings.storage)

    def trial_config(self, values: dict[str, Any], *, number: int, parent_run_id: str | None = None) -> Config:
        """The training config of trial ``number``: the trial's values, its own run folder
        (``STUDY_DIR/trial-0007``), and its tracked run nested under the study.

        A trial never sees the test split: its final evaluation is on the validation split (``eval/val/``, tracked
        as ``eval_val/*``), the split it is chosen on, and it registers no model. The test split is evaluated once,
        by the run trained from ``best_config.yaml``; a study that looked at the test score of every trial would
        invite choosing on test."""
        base = self.config
        managed: dict[str, Any] = {"output_dir": str(self.study_dir.parent), "experiment": self.name,
                                   "run_name": f"trial-{number:04d}", "tracking.wandb.group": self.name,
                                   "evaluation.split": "val", "registry.name": None,
                                   # a trial is never predicted with: no OOD detector (a backbone pass per trial)
                                   "evaluation.ood.enabled": False}
        if "mlflow" in base.tracking.backends:
            from plantpheno.tracking.mlflow_backend import tracking_uri

            # the trial's folder moves output_dir and experiment; its MLflow run stays where the base run's would be
            managed.update({"tracking.mlflow.uri": tracking_uri(base.tracking.mlflow, base.output_dir),
                            "tracking.mlflow.experiment": base.tracking.mlflow.experiment or base.experiment,
                            "tracking.mlflow.parent_run_id": parent_run_id})
        raw = apply_values(apply_values(config_to_dict(base), values), managed)
        return validate_config(raw, source=f"trial {number} of study {self.name}")

    def best_config(self, values: dict[str, Any]) -> Config:
        """The base config with ``values`` applied: what ``best_config.yaml`` holds."""
        return validate_config(apply_values(config_to_dict(self.config), values), source="best trial values")


def make_plan(config: Config, space: SearchSpace, settings: TuneSettings) -> StudyPlan:
    """Check the space against ``config`` and resolve every default of ``settings``.

    Raises:
        ConfigError: for an invalid space, an unknown metric, a direction that contradicts the metric.
    """
    check_space(space, config)
    metric = settings.metric or config.monitor[0]
    _check_metric(config, metric)
    natural = _natural_direction(config, metric)
    if settings.direction is not None and settings.direction != natural:
        raise ConfigError(f"tuning.direction: got {settings.direction!r}; expected {natural!r} for {metric} "
                          f"({'higher' if natural == 'maximize' else 'lower'} is better)")
    seed = config.seed if settings.seed is None else settings.seed
    grid = tuple(space.grid()) if settings.sampler == "grid" else None
    combinations = len(grid) if grid is not None else None
    if grid is not None:
        trials = min(settings.trials or len(grid), len(grid))
        grid = cap_grid(grid, trials, seed=seed)
    else:
        trials = settings.trials or DEFAULT_TRIALS
    study = settings.study or "study"
    study_dir = config.output_dir / config.experiment / study
    storage = settings.storage or f"journal://{(study_dir / JOURNAL_FILE).resolve()}"
    resolved = settings.model_copy(update={
        "study": study, "metric": metric, "direction": natural, "trials": trials, "storage": storage,
        "seed": seed})
    return StudyPlan(config, space, resolved, study_dir, grid, combinations)


def cap_grid(grid: tuple[dict[str, Any], ...], trials: int, *, seed: int) -> tuple[dict[str, Any], ...]:
    """``trials`` combinations of ``grid``, chosen with ``seed`` so that every value of every field is in one of
    them when ``trials`` allows it (at least as many trials as the field with the most values has values).

    The first N combinations of a full grid all share the first field's first value (a grid capped at 20 of 54
    ran every trial at the lowest learning rate): greedily, each pick is the combination, in a seeded shuffled
    order, that adds the most values not yet covered; once all are covered, the rest follow the shuffled order.
    On a full grid each pick can cover one new value of every field that still has one, so ``max(values per
    field)`` picks cover them all. The whole grid keeps its written order (first field slowest)."""
    if trials >= len(grid):
        return grid
    order = list(grid)
    random.Random(seed).shuffle(order)
    uncovered = {(k, repr(v)) for point in grid for k, v in point.items()}
    chosen: list[dict[str, Any]] = []
    while len(chosen) < trials and uncovered:
        best = max(order, key=lambda p: len(uncovered & {(k, repr(v)) for k, v in p.items()}))  # first of ties
        order.remove(best)
        chosen.append(best)
        uncovered -= {(k, repr(v)) for k, v in best.items()}
    return tuple(chosen + order[:trials - len(chosen)])


def _check_metric(config: Config, metric: str) -> None:
    from plantpheno.training.objectives import Classification, Regression

    task = Classification if config.task == "classification" else Regression
    known = ["val/loss", *(f"val/{m}" for m in task.metric_names), "train/loss", f"train/{task.train_metric}"]
    if metric not in known:
        raise ConfigError(f"tuning.metric: got {metric!r}; expected one of {', '.join(known)} (task={config.task})")


def _natural_direction(config: Config, metric: str) -> Literal["maximize", "minimize"]:
    training = config.training.model_copy(update={"monitor": metric})
    _, mode = config.model_copy(update={"training": training}).monitor
    return "maximize" if mode == "max" else "minimize"


def describe_plan(plan: StudyPlan) -> list[str]:
    """What ``--dry-run`` prints: the study, its objective and budget, its space, and a grid's trials."""
    s = plan.settings
    lines = [f"study {plan.name} in {plan.study_dir} (storage {plan.storage_url})",
             f"sampler {s.sampler}, pruner {s.pruner}, objective: best {plan.metric} over epochs ({plan.direction}), "
             f"{plan.n_trials} trials" + (f", timeout {s.timeout:g} s" if s.timeout else ""),
             "space:", *(f"  {line}" for line in plan.space.describe())]
    if plan.grid is not None:
        cut = (f" ({plan.n_trials} of its {plan.grid_size} combinations, sampled with seed {plan.settings.seed} "
               f"to cover every value: --trials or tuning.trials caps a grid)" if plan.grid_size and plan.grid_size > plan.n_trials else "")
        lines.append(f"grid: {plan.n_trials} trials{cut}")
        lines += [f"  {i:4d}  " + "  ".join(f"{k}={v!r}" for k, v in point.items())
                  for i, point in enumerate(plan.grid)]
    return lines
