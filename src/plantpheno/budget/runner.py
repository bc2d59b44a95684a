"""Budget mode's loop: profile the data, try the ladder's candidates cheapest first while the rest of the budget
fits the next one, choose on validation only, then train the chosen candidate as a normal run evaluated on test.

No candidate is evaluated on the test split: each runs with ``evaluation.split: val`` (as tuning trials do) in its
own folder under ``OUTPUT_DIR/<experiment>-candidates/``. Only the final run, started after the choice, evaluates
the test split, once; it is an ordinary run folder (report, registry, export, predict, serving) that also holds the
leaderboard.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plantpheno.pipeline as pipeline
import plantpheno.budget.leaderboard as leaderboard
from plantpheno.budget.deadline import (CandidateDeadline, DeadlineReached, FinalDeadline, PassClock, fit_schedule,
                                        reporter_with_clock)
from plantpheno.budget.estimate import MARGIN, DataSize, Estimator, probe
from plantpheno.budget.folds import validation_too_small, write_fold_manifests
from plantpheno.budget.ladder import TTA_REASON, Candidate, ladder_for, resize_of
from plantpheno.budget.profile import DataProfile, profile_data
from plantpheno.budget.settings import BudgetPlan, candidate_config, final_config, plan_budget
from plantpheno.config import Config
from plantpheno.errors import ConfigError, TrainingError
from plantpheno.records.evaluation import Evaluation
from plantpheno.reporting import Reporter, default_reporter
from plantpheno.run.folder import RunDir
from plantpheno.training.feature_store import FeatureStore
from plantpheno.training.loop import Interrupted

Z = 1.959963984540054  # the 95 % normal quantile: a bootstrap interval's half-width over Z is a standard error


class CandidateInterrupted(Exception):
    """Ctrl-C (or SIGTERM) during a candidate: budget mode ends without a final run. A candidate's folder is not a
    run to resume (it never evaluates the test split), so the message names it and says to start again."""

    def __init__(self, reason: str, candidate: str, folder: Path | None, candidates_dir: Path) -> None:
        self.reason, self.candidate, self.folder, self.candidates_dir = reason, candidate, folder, candidates_dir
        super().__init__(f"budget mode interrupted by {reason} during candidate {candidate} (its run folder: "
                         f"{folder}); no final run was trained. The candidates so far are in {candidates_dir}; "
                         f"run the same command again to start the budget over")


@dataclass(frozen=True)
class BudgetResult:
    """The final run (a normal :class:`~plantpheno.pipeline.RunResult`) and the leaderboard that chose it."""

    run: pipeline.RunResult
    chosen: leaderboard.Row
    rows: tuple[leaderboard.Row, ...]
    elapsed_s: float
    budget_s: float


def train_in_budget(config: Config, *, budget_s: float | None = None, reporter: Reporter | None = None,
                    ladder: Sequence[Candidate] | None = None, callbacks: Sequence[object] = ()) -> BudgetResult:
    """The best validated candidate of the ladder (:mod:`plantpheno.budget.ladder`) within ``budget_s`` seconds
    of wall-clock time (default: ``budget.time`` of the config), trained as a normal run and evaluated on test once.

    ``ladder`` replaces the ladder (tests use a tiny one). Raises ConfigError when the budget cannot fit the
    cheapest candidate (saying how much it needs) or when no budget is given."""
    start = time.monotonic()
    reporter = default_reporter(reporter)
    budget_s = budget_s if budget_s is not None else config.budget.seconds
    if budget_s is None:
        raise ConfigError("budget mode needs a budget: --budget 15m, budget= in the API, or budget.time in the config")
    plan = plan_budget(config, reporter=reporter)
    profile = profile_data(plan.base, reporter=reporter)
    small = validation_too_small(profile.prepared)
    folds = config.budget.folds if small else 1
    candidates = list(ladder) if ladder is not None else ladder_for(aspect_varies=profile.aspect_varies)
    size = DataSize(*(len(profile.prepared.splits[s]) for s in ("train", "val", "test")), folds=folds)
    estimator = Estimator(size, head_epochs=plan.head_epochs, fine_tune_epochs=plan.fine_tune_epochs,
                          probed=probe(plan.base.device))
    stretched = _check_fits(candidates[0], estimator, budget_s - (time.monotonic() - start), budget_s, reporter)
    manifests = (write_fold_manifests(profile.prepared, folds, seed=config.seed, folder=plan.candidates_dir / "folds")
                 if folds > 1 else [])
    metric, direction = plan.metric, plan.direction
    _announce(reporter, plan, candidates, budget_s, small, folds, profile)
    rows = [leaderboard.Row(i + 1, c.name(resize_of(c, plan.recipe_resize)), c.reason, _settings(c, plan))
            for i, c in enumerate(candidates)]
    store, tried = FeatureStore(), _Loop(plan, estimator, reporter, start, budget_s, manifests)
    tried.stretched = stretched
    for row, candidate in zip(rows, candidates, strict=True):
        if not tried.run(row, candidate, store):
            break
    if ladder is None:
        _try_tta(rows, candidates, plan, tried, store)
    for row in rows:
        row.status = "not tried" if row.status == "pending" else row.status
    chosen = _choose(rows, plan, reporter, budget_s, tried, candidates[0])
    best = candidates[chosen.rung - 1]
    reporter.info(f"budget: chose {chosen.name} (validation {metric} {chosen.score:.4f} ± {chosen.se:.4f} SE) by "
                  f"the rule: {leaderboard.rule_text(metric, direction)}; training it as the final run and "
                  f"evaluating the test split once; {budget_s - tried.elapsed():.0f} s left")
    result = _final_run(plan, best, rows, chosen, store, tried, callbacks, reporter)
    return BudgetResult(result, chosen, tuple(rows), tried.elapsed(), budget_s)


def _try_tta(rows: list[leaderboard.Row], candidates: list[Candidate], plan: BudgetPlan, loop: _Loop,
             store: FeatureStore) -> None:
    """The last rung: the leader with test-time augmentation, when it fits."""
    leader = leaderboard.choose(rows, direction=plan.direction)
    if leader is None or loop.stopped:
        return
    tta = Candidate(**{**candidates[leader.rung - 1].__dict__, "tta": "flips", "reason": TTA_REASON})
    rows.append(leaderboard.Row(len(rows) + 1, tta.name(resize_of(tta, plan.recipe_resize)), TTA_REASON,
                                _settings(tta, plan)))
    candidates.append(tta)
    loop.run(rows[-1], tta, store)


def _choose(rows: list[leaderboard.Row], plan: BudgetPlan, reporter: Reporter, budget_s: float, loop: _Loop,
            first: Candidate) -> leaderboard.Row:
    """The rule over the finished candidates; over those cut at their deadline only when none finished; when none
    was scored, a message saying what ran, for how long, and the budget that would fit (:func:`_nothing_scored`)."""
    chosen = leaderboard.choose(rows, direction=plan.direction)
    if chosen is None and (chosen := leaderboard.choose(rows, direction=plan.direction, status="cut")) is not None:
        reporter.warning(f"budget: no candidate finished before its deadline; choosing {chosen.name}, which was cut "
                         f"short: this budget is too tight for this machine and data")
    if chosen is None:
        raise ConfigError(_nothing_scored(rows, loop, first, budget_s))
    return chosen


def _nothing_scored(rows: Sequence[leaderboard.Row], loop: _Loop, first: Candidate, budget_s: float) -> str:
    """What ran and how long it took, and the budget the cheapest candidate and its final run need at the speed
    measured (a dropped candidate's seconds are a lower bound, so the figure is too)."""
    ran = [f"{r.name} {r.status} after {r.seconds:.0f} s" + (f" ({r.note})" if r.note else "")
           for r in rows if r.seconds is not None]
    need = loop.estimator.seconds(first, pass_cached=False) + loop.estimator.final_seconds(first)
    what = "; ".join(ran) if ran else "no candidate started"
    return (f"no candidate was scored within the budget of {budget_s:.0f} s: {what}; budget mode stopped after "
            f"{loop.elapsed():.0f} s. At the speed measured, the cheapest candidate and its final run need at least "
            f"{need:.0f} s: give at least --budget {_spell(need * 1.2)}")


class _Loop:
    """Runs one candidate at a time while the budget allows, and keeps the clock and the estimator."""

    def __init__(self, plan: BudgetPlan, estimator: Estimator, reporter: Reporter, start: float, budget_s: float,
                 manifests: Sequence[Path]) -> None:
        self.plan, self.estimator, self.reporter = plan, estimator, reporter
        self.start, self.budget_s, self.manifests = start, budget_s, list(manifests)
        self.stopped = False
        self.leader_final_s = 0.0
        self.epoch_s: dict[Candidate, dict[str, float]] = {}  # a finished candidate's epoch seconds by phase
        self.folder: Path | None = None  # the folder of the candidate's run that runs now
        self.stretched = False  # the first candidate starts although its estimate exceeds the budget (_check_fits)

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def reserve(self, candidate: Candidate) -> float:
        """Seconds kept for the final run: the most any candidate that could be chosen would need."""
        return max(self.leader_final_s, self.estimator.final_seconds(candidate))

    def run(self, row: leaderboard.Row, candidate: Candidate, store: FeatureStore) -> bool:
        """Run ``candidate`` if the rest of the budget fits it and the final run after it; False once it does
        not (no later candidate starts) or once a candidate reached its deadline."""
        if self.stopped:
            row.status = "not tried"
            return False
        key = self.plan.pass_key(candidate)
        cached = key in self.plan.passes_done
        estimate = self.estimator.seconds(candidate, pass_cached=cached)
        final = self.reserve(candidate)
        left = self.budget_s - self.elapsed()
        row.estimate_s = round(estimate, 1)
        stretch, self.stretched = self.stretched, False  # only the first candidate, before any measurement
        if estimate + final > left and not stretch:
            row.status, self.stopped = "skipped", True
            row.note = (f"estimated {estimate:.0f} s + {final:.0f} s for the final run > {left:.0f} s left")
            self.reporter.info(f"budget: stopping before {row.name}: it would take about {estimate:.0f} s and the "
                               f"final run {final:.0f} s, {left:.0f} s are left")
            return False
        self.reporter.info(f"budget: candidate {row.rung} {row.name} ({row.reason}); about {estimate:.0f} s, "
                           f"{left:.0f} s left")
        began = time.monotonic()
        # whatever the estimate said, the candidate stops here: the rest of the budget is the final run's
        at = self.start + self.budget_s - (final if not stretch else left * final / max(estimate + final, 1e-9))
        # a fine-tune phase whose first epoch would not end in time does not start: the head phase's best is scored
        expected = {"fine_tune": self.estimator.fine_tune_epoch_seconds(candidate)} if candidate.blocks else {}
        clock, deadline = PassClock(at), CandidateDeadline(at, expected=expected)
        results: list[tuple[float, tuple[float, float] | None]] = []
        try:
            for k in range(max(1, len(self.manifests))):
                results.append(self._one(candidate, row, k, store, clock, deadline))
        except DeadlineReached as exc:  # inside a pass or an epoch: nothing to score
            row.status, row.note = "dropped", (f"dropped: the deadline came during {exc.where} of fold "
                                               f"{len(results) + 1}; no validation figure")
        except TrainingError as exc:  # a diverging candidate; bad data or weights stop budget mode
            row.status, row.note = "failed", str(exc)
            self.reporter.warning(f"budget: candidate {row.name} failed: {exc}")
            return True
        except (Interrupted, KeyboardInterrupt) as exc:  # Ctrl-C: a candidate's folder is no run to resume
            reason = exc.reason if isinstance(exc, Interrupted) else "SIGINT"
            raise CandidateInterrupted(reason, row.name, self.folder, self.plan.candidates_dir) from None
        row.seconds = round(time.monotonic() - began, 1)
        # a candidate stopped early would have taken longer still: its seconds are a lower bound
        self.estimator.record(candidate, pass_cached=cached, seconds=row.seconds)
        if clock.passes or cached:
            self.plan.passes_done.add(key)
        self.epoch_s[candidate] = deadline.epoch_s
        if row.status == "dropped" or deadline.fired:
            return self._cut(row, candidate, results, estimate)
        self.estimator.record_run(candidate, seconds=row.seconds, pass_seconds=sum(t for _, t in clock.passes),
                                  pass_images=sum(n for n, _ in clock.passes))
        leaderboard.summarise(row, results, z=Z)
        row.status = "done"
        spread = f"± {row.se:.4f} SE" + (f" over {len(results)} folds" if len(results) > 1 else "")
        self.reporter.info(f"budget: {row.name}: validation {self.plan.metric} {row.score:.4f} {spread} in "
                           f"{row.seconds:.0f} s; {self.budget_s - self.elapsed():.0f} s left")
        self.leader_final_s = max(self.leader_final_s, self.estimator.final_seconds(candidate))
        return True

    def _cut(self, row: leaderboard.Row, candidate: Candidate, results: list[tuple[float, tuple[float, float] | None]],
             estimate: float) -> bool:
        """A candidate that reached its deadline: scored on the epochs it reached (every fold evaluated its best
        epoch) or dropped; no later candidate starts."""
        self.stopped = True
        if row.status != "dropped":
            row.status = "cut"
            leaderboard.summarise(row, results, z=Z)
            row.note = ("cut: stopped at the budget's deadline before its planned last epoch; scored on the best "
                        "epoch it reached; chosen only if no candidate finished")
        self.reporter.warning(f"budget: {row.name} ran past its estimate ({estimate:.0f} s) and reached its deadline, "
                              f"which keeps the final run its time: {row.note} (the budget is tight for this "
                              f"machine)")
        return False

    def _one(self, candidate: Candidate, row: leaderboard.Row, fold: int, store: FeatureStore, clock: PassClock,
             deadline: CandidateDeadline) -> tuple[float, tuple[float, float] | None]:
        manifest = self.manifests[fold] if self.manifests else None
        config = candidate_config(self.plan, candidate, rung=row.rung, fold=fold + 1 if manifest else None,
                                  manifest=manifest, first=row.rung == 1)
        self.folder = config.output_dir / config.experiment / str(config.run_name)
        if deadline.fired:  # an earlier fold stopped at an epoch's end: this one would not train at all
            raise DeadlineReached("the start of the fold")
        result = pipeline.train(config, reporter=reporter_with_clock(self.plan.quiet, clock), feature_store=store,
                                callbacks=[deadline])
        row.runs.append(str(result.run_dir))
        return leaderboard.score_of(Evaluation.from_dict(result.metrics), self.plan.metric)


def _final_run(plan: BudgetPlan, best: Candidate, rows: list[leaderboard.Row], chosen: leaderboard.Row,
               store: FeatureStore, loop: _Loop, callbacks: Sequence[object],
               reporter: Reporter) -> pipeline.RunResult:
    """The chosen candidate trained on train (validated on val), evaluated on test, with the leaderboard in its
    folder before its report is written (the report shows it) and its files reach the trackers."""
    # training ends where the evaluation, timed from the candidates' passes with a margin, still ends in the budget
    # (the 10 % over it that issue 33 allows is slack for the estimate, not a target)
    evaluation = loop.estimator.evaluation_seconds(best) * MARGIN
    scale = loop.estimator.train_scale()
    expected = {phase: s * scale for phase, s in loop.epoch_s.get(best, {}).items()}
    train_until = loop.start + loop.budget_s - evaluation
    planned = plan.head_epochs + (plan.fine_tune_epochs if best.blocks else 0)
    epochs = _fit_final(plan, best, expected, train_until - time.monotonic() - loop.estimator.setup_seconds())
    config = final_config(plan, best, epochs=epochs)
    run = RunDir(config.output_dir / config.experiment / str(config.run_name))
    extra: dict[str, Any] = {"candidates_dir": str(plan.candidates_dir), "final_run": str(run.path)}
    fitted = sum(epochs.values())
    if fitted < planned:
        extra["final_fitted_epochs"] = fitted
        reporter.warning(f"budget: the final run's schedule is fitted to the time left: {fitted} of the recipe's "
                         f"{planned} epochs (at the candidate's measured epoch time), its learning rate annealed "
                         f"over those")

    def write(elapsed: float) -> None:
        extra.update(final_epochs=deadline.epochs, final_planned_epochs=planned, final_cut=deadline.fired)
        leaderboard.write(run.budget_leaderboard, run.budget_leaderboard_csv, rows=rows, chosen=chosen,
                          metric=plan.metric, direction=plan.direction, budget_s=loop.budget_s, elapsed_s=elapsed,
                          folds=max(1, len(loop.manifests)), extra=extra)

    began = loop.elapsed()
    # the schedule was fitted to the time left; an epoch whose measured length would still cross the training's end
    # (the machine slowed down) does not start
    deadline = FinalDeadline(train_until, expected=expected)
    result = pipeline.train(config, reporter=reporter, feature_store=store,
                            callbacks=[deadline, _WriteLeaderboard(lambda: write(loop.elapsed())), *callbacks])
    if deadline.fired:
        reporter.warning(f"budget: the final run trained {deadline.epochs} of its {planned} planned epochs to end "
                         f"within the budget (the next epoch would have ended past it); its best checkpoint (on "
                         f"validation) was evaluated")
    total = loop.elapsed()
    extra["final_run_s"] = round(total - began, 1)
    write(total)
    over = total / loop.budget_s - 1
    reporter.info(f"budget: done in {total:.0f} s of {loop.budget_s:.0f} s"
                  + (f" ({over:.0%} over)" if over > 0 else "") + f"; leaderboard: {run.budget_leaderboard_csv}")
    return result


def _fit_final(plan: BudgetPlan, best: Candidate, expected: dict[str, float], seconds: float) -> dict[str, int]:
    """The final run's head and fine-tune epochs that fit ``seconds`` at the candidate's measured epoch times
    (the recipe's when they fit, or when the candidate measured none)."""
    planned = {"train": (plan.head_epochs, expected.get("train", 0.0))}
    if best.blocks:
        planned["fine_tune"] = (plan.fine_tune_epochs, expected.get("fine_tune", 0.0))
    if not all(each > 0 for _, each in planned.values()):
        return {phase: epochs for phase, (epochs, _) in planned.items()}
    return fit_schedule(seconds, planned)


class _WriteLeaderboard:
    """Trainer callback: write the leaderboard when each of the final run's phases starts (its folder exists) and
    ends (with the epochs it trained), so its report, written after training, shows it."""

    def __init__(self, write: Any) -> None:
        self.write = write

    def on_fit_start(self, trainer: object) -> None:
        self.write()

    def on_fit_end(self, trainer: object) -> None:
        self.write()


STRETCH = 2.0  # the cheapest candidate starts when its estimate is within this factor of the budget left


def _check_fits(first: Candidate, estimator: Estimator, left: float, budget_s: float, reporter: Reporter) -> bool:
    """Whether the cheapest candidate and its final run fit the budget; True when they do not but are within
    :data:`STRETCH` of it: the estimate before any candidate ran is a prior scaled by a probe, so rather than
    refuse, the candidate starts under its deadline (which stops it in time) and its measured seconds decide."""
    need = estimator.seconds(first, pass_cached=False) + estimator.final_seconds(first)
    if left < need <= STRETCH * left:
        reporter.warning(f"budget: the cheapest candidate and its final run are estimated at {need:.0f} s, more than "
                         f"the {left:.0f} s left but within {STRETCH:g}x of it; starting it anyway under its deadline "
                         f"(the estimate is a prior scaled by a speed probe; the candidate's measured seconds replace "
                         f"it, and if it is stopped before a score the message says the budget that would fit)")
        return True
    if need > left:
        raise ConfigError(f"a budget of {budget_s:.0f} s is below the cheapest candidate's estimated cost: "
                          f"{first.name('crop').rsplit('-', 2)[0]} head-only and its final run need about "
                          f"{need:.0f} s on this data ({estimator.size.train + estimator.size.val} train+val "
                          f"images); give at least --budget {_spell(need * 1.2)}")
    return False


def _spell(seconds: float) -> str:
    minutes = int(seconds // 60) + 1
    return f"{minutes}m" if seconds >= 60 else f"{int(seconds) + 1}s"


def _settings(candidate: Candidate, plan: BudgetPlan) -> dict[str, Any]:
    return candidate.overrides(resize=resize_of(candidate, plan.recipe_resize),
                               fine_tune_epochs=plan.fine_tune_epochs)


def _announce(reporter: Reporter, plan: BudgetPlan, candidates: Sequence[Candidate], budget_s: float,
              small: str | None, folds: int, profile: DataProfile) -> None:
    how = (f"group {folds}-fold cross-validation on train+val ({small})" if folds > 1
           else f"the validation split ({len(profile.prepared.splits['val'])} images)")
    reporter.info(f"budget: {budget_s:.0f} s for up to {len(candidates)} candidates (+ TTA on the leader), scored "
                  f"on {how}; rule, fixed now: "
                  f"{leaderboard.rule_text(plan.metric, plan.direction)}; the test split is "
                  f"evaluated once, for the chosen candidate")
