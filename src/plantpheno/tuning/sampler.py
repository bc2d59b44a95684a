"""A study's sampler whose draws for trial N depend only on the study's seed and N.

Each worker process has its own sampler object. Seeded per process, processes started the same way (several
``plantpheno tune`` commands, on one machine or several) draw the same values: three launchers sharing a
PostgreSQL study ran 5 trials with only 2 distinct learning rates. Trial numbers are handed out by the storage,
once each, so seeding each trial's draws from ``(seed, trial number)`` keeps every process apart and makes a
study's values the same however many processes share it. Only Optuna's public sampler interface is used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """Delegates to ``make(seed)``, a new inner sampler for each trial, seeded from the study seed and its number."""

    def __init__(self, make: Callable[[int], optuna.samplers.BaseSampler], *, seed: int) -> None:
        self.make, self.seed = make, seed
        self.number: int | None = None
        self.inner: optuna.samplers.BaseSampler = make(seed)

    def for_trial(self, trial: FrozenTrial) -> optuna.samplers.BaseSampler:
        if trial.number != self.number:
            self.number = trial.number
            self.inner = self.make((self.seed * 1_000_003 + trial.number * 7919) % 2**32)
        return self.inner

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.for_trial(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self.for_trial(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self.for_trial(trial).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.for_trial(trial).before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self.for_trial(trial).after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()
