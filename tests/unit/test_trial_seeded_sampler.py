"""Trial N's sampled values depend on the study seed and N only: processes sharing a study never repeat each
other's draws (several launchers used to share one seed), and the values are the same however many share it."""

from __future__ import annotations

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend

from plantpheno.tuning.sampler import TrialSeededSampler


def _make(kind: str):
    if kind == "tpe":
        return lambda seed: optuna.samplers.TPESampler(seed=seed, n_startup_trials=3, constant_liar=True)
    return lambda seed: optuna.samplers.RandomSampler(seed=seed)


def _studies(path, kind: str, count: int, seed: int = 7) -> list[optuna.Study]:
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    optuna.create_study(study_name="s", storage=storage, direction="minimize")
    return [optuna.load_study(study_name="s", storage=storage, sampler=TrialSeededSampler(_make(kind), seed=seed))
            for _ in range(count)]


def _run(studies: list[optuna.Study], trials: int) -> dict[int, float]:
    values = {}
    for i in range(trials):  # the processes take turns, as workers sharing a queue do
        study = studies[i % len(studies)]
        trial = study.ask()
        x = trial.suggest_float("x", 1e-4, 1e-1, log=True)
        study.tell(trial, (x - 0.01) ** 2)
        values[trial.number] = x
    return values


@pytest.mark.parametrize("kind", ["random", "tpe"])
def test_three_processes_draw_distinct_values_and_the_same_as_one(tmp_path, kind):
    shared = _run(_studies(tmp_path / "three.log", kind, 3), 9)
    assert len(set(shared.values())) == 9
    alone = _run(_studies(tmp_path / "one.log", kind, 1), 9)
    assert alone == shared
    other_seed = _run(_studies(tmp_path / "other.log", kind, 1, seed=8), 9)
    assert not set(other_seed.values()) & set(alone.values())
