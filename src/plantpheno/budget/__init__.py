"""Budget mode: the best validated model within a wall-clock budget (``plantpheno train CONFIG --budget 15m``).

A client of :func:`plantpheno.pipeline.train`, like tuning (never a layer under it): it tries the candidates of
:mod:`plantpheno.budget.ladder` cheapest first, sharing every frozen backbone pass between them
(:class:`plantpheno.training.feature_store.FeatureStore`), stops starting candidates when the rest of the budget
would not fit the next one (:mod:`plantpheno.budget.estimate`), chooses on validation data only (group K-fold on
train+val when the validation split is small: :mod:`plantpheno.budget.folds`) by a rule stated before the first
candidate (:mod:`plantpheno.budget.leaderboard`), and trains the chosen candidate as a normal run that evaluates
the test split once.
"""

from __future__ import annotations

from plantpheno.budget.runner import BudgetResult, CandidateInterrupted, train_in_budget
from plantpheno.config import parse_duration

__all__ = ["BudgetResult", "CandidateInterrupted", "parse_duration", "train_in_budget"]
