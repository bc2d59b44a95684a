"""Budget mode's cost estimate before any candidate ran (issue 33): the probe keeps the fastest of its passes and
a bounded factor, the fixed parts are not scaled by it, a cheapest candidate within 2x of the budget starts under
its deadline, and a budget that scored nothing says what ran and the budget that would fit. Fake clocks, no
training."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

import plantpheno.budget.runner as runner
from plantpheno.budget.estimate import PASS_S, PROBE_IMAGES, DataSize, Estimator, probe_factor
from plantpheno.budget.ladder import LADDER
from plantpheno.budget.leaderboard import Row
from plantpheno.errors import ConfigError
from plantpheno.reporting import RecordingReporter

REFERENCE = PROBE_IMAGES * PASS_S  # the probe's seconds on the reference machine
TRAITS = DataSize(168, 36, 36, folds=5)  # the synthetic trait data of benchmarks/results/budget.json


class FakeClock:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _need(est: Estimator) -> float:
    return est.seconds(LADDER[0], pass_cached=False) + est.final_seconds(LADDER[0])


def test_a_stall_in_one_probe_pass_does_not_set_the_machine_s_speed():
    assert probe_factor([20 * REFERENCE, 2 * REFERENCE, 2.5 * REFERENCE]) == pytest.approx(2.0)
    assert probe_factor([100 * REFERENCE] * 3) == 5.0  # bounded: the deadline catches an optimistic estimate
    assert probe_factor([0.01 * REFERENCE]) == 0.25  # a fast device still pays the fixed parts


def test_the_probe_scales_compute_not_the_fixed_parts_until_a_candidate_ran():
    one = Estimator(TRAITS, head_epochs=60, fine_tune_epochs=10, probed=1.0)
    slow = Estimator(TRAITS, head_epochs=60, fine_tune_epochs=10, probed=5.0)
    fixed = TRAITS.folds * one.fixed(LADDER[0])
    compute = one.seconds(LADDER[0], pass_cached=False) - fixed
    assert slow.seconds(LADDER[0], pass_cached=False) == pytest.approx(5 * compute + fixed)
    # the traits recipe finished in 242 s on the loaded machine: budget mode at the probe's worst no longer asks
    # for 35 minutes (1712 s) for its cheapest candidate, and 5 minutes at least starts it
    assert _need(slow) <= runner.STRETCH * 300
    slow.record(LADDER[0], pass_cached=False, seconds=400.0)  # measured: the whole prior scales by it
    assert slow.seconds(LADDER[0], pass_cached=False) == pytest.approx(slow.prior(LADDER[0], pass_cached=False)
                                                                       * slow.factor)


def test_a_cheapest_candidate_within_twice_the_budget_starts_and_a_far_one_is_refused_with_its_need():
    est = Estimator(DataSize(1570, 337, 343), head_epochs=60, fine_tune_epochs=6, probed=1.0)
    need, reporter = _need(est), RecordingReporter()
    assert runner._check_fits(LADDER[0], est, need / 1.5, need / 1.5, reporter) is True
    assert any("estimated at" in m and "starting it anyway under its deadline" in m for level, m in reporter.lines if level == "warning")
    assert runner._check_fits(LADDER[0], est, need * 1.1, need * 1.1, reporter) is False
    with pytest.raises(ConfigError, match=r"below the cheapest candidate's estimated cost.*need about \d+ s.*"
                                          r"give at least --budget \d+m"):
        runner._check_fits(LADDER[0], est, need / 3, need / 3, reporter)


def _loop(monkeypatch, clock: FakeClock, budget_s: float, est: Estimator) -> runner._Loop:
    monkeypatch.setattr(runner.time, "monotonic", clock)
    plan = SimpleNamespace(pass_key=lambda c: c.backbone, passes_done=set(), metric="accuracy", quiet=True,
                           candidates_dir=Path("unused"))
    return runner._Loop(plan, est, RecordingReporter(), clock.t, budget_s, [])


def test_a_stretched_first_candidate_runs_under_a_deadline_inside_the_budget(monkeypatch):
    clock = FakeClock(1000.0)
    est = Estimator(DataSize(1570, 337, 343), head_epochs=60, fine_tune_epochs=6, probed=1.0)
    budget = _need(est) / 1.5
    loop = _loop(monkeypatch, clock, budget, est)
    loop.stretched = True
    seen = []

    def one(candidate, row, fold, store, passes, deadline):
        seen.append(deadline.at)
        clock.t += 50
        return 0.9, None

    monkeypatch.setattr(loop, "_one", one)
    row = Row(1, "lite0-224-crop-head", "cheapest", {})
    assert loop.run(row, LADDER[0], store=None) and row.status == "done"
    # the candidate's deadline leaves the final run its share of what was left, and lies inside the budget
    assert 1000.0 < seen[0] < 1000.0 + budget
    unstretched = _loop(monkeypatch, FakeClock(1000.0), budget, est)  # without the stretch: skipped, as before
    row2 = Row(1, "lite0-224-crop-head", "cheapest", {})
    assert not unstretched.run(row2, LADDER[0], store=None) and row2.status == "skipped"


def test_nothing_scored_says_what_ran_how_long_and_the_budget_that_fits(monkeypatch):
    clock = FakeClock(0.0)
    est = Estimator(DataSize(1570, 337, 343), head_epochs=60, fine_tune_epochs=6, probed=1.0)
    loop = _loop(monkeypatch, clock, 120.0, est)
    clock.t = 118.0
    dropped = Row(1, "lite0-224-crop-head", "cheapest", {}, status="dropped", seconds=97.0,
                  note="dropped: the deadline came during backbone pass (train) of fold 1; no validation figure")
    est.record(LADDER[0], pass_cached=False, seconds=97.0)  # a lower bound, as the loop records it
    rows = [dropped, Row(2, "lite0-224-crop-ft1", "the last block", {}, status="not tried")]
    plan = SimpleNamespace(direction="max")
    with pytest.raises(ConfigError) as err:
        runner._choose(rows, plan, RecordingReporter(), 120.0, loop, LADDER[0])
    message = str(err.value)
    assert "no candidate was scored within the budget of 120 s" in message
    assert "lite0-224-crop-head dropped after 97 s" in message and "backbone pass (train)" in message
    assert "stopped after 118 s" in message
    need = est.seconds(LADDER[0], pass_cached=False) + est.final_seconds(LADDER[0])
    assert f"need at least {need:.0f} s" in message and "give at least --budget" in message
    assert "lite0-224-crop-ft1" not in message  # not tried: not among what ran
