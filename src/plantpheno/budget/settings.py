"""Budget mode's settings, resolved once before the first candidate: the recipe the candidates start from, where
their folders go, and each candidate's (and the final run's) config."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plantpheno.budget.ladder import BACKBONES, Candidate, resize_of
from plantpheno.config import MANIFEST_COLUMNS, Config, config_to_dict, flatten_dict, load_config
from plantpheno.errors import ConfigError
from plantpheno.recipes import RECIPES_DIR
from plantpheno.reporting import Progress, Reporter
from plantpheno.tasks import task_metrics
from plantpheno.files.yamlfile import read_yaml_mapping

RECIPE = {"classification": "classify", "regression": "traits"}
# settings of the user's config that say how to run on this machine, not what to train: candidates keep them
KEPT_TRAINING = ("threads", "progress_bar", "channels_last", "compile", "check_every", "release_memory",
                 "mixed_precision")


class QuietReporter:
    """A candidate's own messages: warnings pass to the user's reporter, epoch lines and bars go nowhere (budget
    mode's progress says which candidate runs, its figure and the time left)."""

    def __init__(self, parent: Reporter) -> None:
        self.parent = parent

    def info(self, message: str) -> None:
        pass

    def warning(self, message: str) -> None:
        self.parent.warning(message)

    def progress(self, *, total: int | None, desc: str, unit: str = "it", initial: int = 0) -> Progress:
        from plantpheno.reporting import LoggingReporter

        return LoggingReporter().progress(total=total, desc=desc, unit=unit, initial=initial)


@dataclass
class BudgetPlan:
    """The user's config, the recipe's training sections, the metric and the folders."""

    user: Config
    base: Config  # the user's data and run settings with the recipe's model and training sections
    recipe: str
    metric: str
    direction: str
    name: str  # the final run's folder name; candidates are named after it
    candidates_dir: Path
    quiet: QuietReporter
    passes_done: set[tuple[Any, ...]] = field(default_factory=set)

    @property
    def head_epochs(self) -> int:
        return self.base.training.epochs

    @property
    def fine_tune_epochs(self) -> int:
        return self.base.training.fine_tune.epochs or 6

    @property
    def recipe_resize(self) -> str:
        return self.base.data.resize

    def pass_key(self, candidate: Candidate) -> tuple[Any, ...]:
        """What a backbone pass depends on (the estimator counts a pass made before as free)."""
        return (candidate.backbone, candidate.image_size, resize_of(candidate, self.recipe_resize), candidate.blocks)


def plan_budget(config: Config, *, reporter: Reporter) -> BudgetPlan:
    """Resolve the recipe and the folders, and say what budget mode changes in the user's config."""
    recipe = RECIPE[config.task]
    raw = config_to_dict(config)
    recipe_raw = read_yaml_mapping(RECIPES_DIR / f"{recipe}.yaml")
    raw["model"] = {**recipe_raw["model"], "dropout": config.model.dropout}
    kept = {k: raw["training"][k] for k in KEPT_TRAINING}
    raw["training"] = {**recipe_raw["training"], **kept}
    raw["data"] = {**raw["data"], "augment": {"enabled": False},
                   "resize": recipe_raw["data"].get("resize", raw["data"]["resize"])}
    raw["budget"] = {"time": None, "folds": config.budget.folds}
    base = load_config(None, base=raw)
    if config.model.backbone not in BACKBONES:
        reporter.warning(f"budget mode: model.backbone={config.model.backbone} is not one of the ladder's backbones; "
                         f"it tries the bundled {', '.join(BACKBONES)} instead (offline ImageNet weights, "
                         f"plantpheno[weights]), with the {recipe} recipe's training settings")
    else:
        reporter.info(f"budget mode: candidates start from the {recipe} recipe's training settings (your config's "
                      f"data, seed, device, tracking and registry settings are kept)")
    name = config.run_name or f"budget-{time.strftime('%Y%m%d-%H%M%S')}"
    final = config.output_dir / config.experiment / name
    if final.exists() and any(final.iterdir()):
        raise ConfigError(f"run directory {final} already exists; choose another run_name (budget mode's final run "
                          f"goes there)")
    metric = task_metrics(config.task).headline
    direction = task_metrics(config.task).directions[metric]
    candidates_dir = config.output_dir / f"{config.experiment}-candidates"
    return BudgetPlan(config, base, recipe, metric, direction, name, candidates_dir, QuietReporter(reporter))


def candidate_config(plan: BudgetPlan, candidate: Candidate, *, rung: int, fold: int | None,
                     manifest: Path | None, first: bool) -> Config:
    """A candidate's run (one fold's, with ``manifest``): evaluated on val only, no report, no trackers, no
    registry, the data checks only in the first candidate's first run (they do not change between candidates)."""
    overrides = _overrides(plan, candidate)
    short = candidate.name(resize_of(candidate, plan.recipe_resize))
    overrides.update({
        "experiment": plan.candidates_dir.name, "run_name": f"{plan.name}-r{rung:02d}-{short}"
        + (f"-fold{fold}" if fold else ""), "evaluation.split": "val", "evaluation.report": False,
        "tracking.backends": [], "registry.name": None, "registry.alias": None,
        "evaluation.ood.enabled": False,  # a candidate is never predicted with: no OOD detector to fit
    })
    if not (first and fold in (None, 1)):
        overrides["data.checks.enabled"] = False
    if manifest is not None:
        overrides.update({"data.manifest": str(manifest), "data.root": None,
                          **{f"data.{k}": v for k, v in MANIFEST_COLUMNS.items()}})
    return load_config(None, overrides, base=config_to_dict(plan.base))


def final_config(plan: BudgetPlan, candidate: Candidate, *, epochs: dict[str, int] | None = None) -> Config:
    """The chosen candidate as the user's run: the user's evaluation (test split, report), trackers and registry;
    ``epochs`` (phase -> epochs) replaces the recipe's where the time left is shorter (:func:`~plantpheno.budget.
    deadline.fit_schedule`)."""
    user = flatten_dict(config_to_dict(plan.user))
    overrides = _overrides(plan, candidate)
    training = plan.base.training
    if epochs and epochs["train"] < training.epochs:  # the warmups shrink with their phases
        overrides["training.epochs"] = epochs["train"]
        overrides["training.warmup_epochs"] = training.warmup_epochs * epochs["train"] / training.epochs
    if epochs and candidate.blocks and epochs.get("fine_tune", 0) < plan.fine_tune_epochs:
        overrides["training.fine_tune.epochs"] = epochs.get("fine_tune", 0)
        overrides["training.fine_tune.warmup_epochs"] = (training.fine_tune.warmup_epochs * epochs.get("fine_tune", 0)
                                                         / plan.fine_tune_epochs)
    overrides.update({k: v for k, v in user.items() if k.startswith(("evaluation.", "tracking.", "registry."))
                      and k != "evaluation.tta"})
    overrides.update({"run_name": plan.name, "data.checks.enabled": False})
    return load_config(None, overrides, base=config_to_dict(plan.base))


def _overrides(plan: BudgetPlan, candidate: Candidate) -> dict[str, Any]:
    return candidate.overrides(resize=resize_of(candidate, plan.recipe_resize), fine_tune_epochs=plan.fine_tune_epochs)
