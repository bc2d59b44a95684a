"""Budget mode keeps its budget by construction (issue 33): a candidate stops at its deadline inside its backbone
pass or an epoch, or before an epoch that would end past it; the final run starts no epoch that would end past its
own; the time kept for the final run is measured from the candidates. Fake clocks drive the callbacks; two tiny real
runs show the training loop and the backbone pass obey them."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from plantpheno import pipeline
from plantpheno.budget.deadline import CandidateDeadline, DeadlineReached, FinalDeadline, PassClock, reporter_with_clock
from plantpheno.budget.estimate import MARGIN, DataSize, Estimator
from plantpheno.budget.ladder import LADDER
from plantpheno.reporting import RecordingReporter
from plantpheno.run.folder import RunDir


class FakeClock:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _trainer(epoch: int = 0, epochs: int = 10, phase: str = "train") -> SimpleNamespace:
    return SimpleNamespace(state=SimpleNamespace(epoch=epoch, phase=phase), epochs=epochs, should_stop=False)


def test_a_candidate_stops_before_an_epoch_that_would_end_past_its_deadline():
    clock = FakeClock()
    deadline, trainer = CandidateDeadline(100.0, now=clock), _trainer()
    deadline.on_fit_start(trainer)
    for epoch in range(3):  # epochs of 30 s: the third ends at 90, the fourth would end at 120 > 100
        deadline.on_epoch_start(trainer)
        clock.t += 30
        trainer.state.epoch = epoch + 1
        deadline.on_epoch_end(trainer, {})
        assert trainer.should_stop == (epoch == 2)
    assert deadline.fired and deadline.epoch_s == {"train": 30}
    # at the deadline itself no phase starts, even one whose epochs were never timed
    clock.t = 100
    fine = _trainer(epoch=3, phase="fine_tune")
    deadline.on_fit_start(fine)
    assert fine.should_stop


def test_a_candidate_past_its_deadline_inside_an_epoch_raises_and_names_where():
    clock = FakeClock()
    deadline, trainer = CandidateDeadline(50.0, now=clock), _trainer(epoch=1, phase="fine_tune")
    deadline.on_fit_start(trainer)
    deadline.on_batch_end(trainer, 0.5, 8)  # in time: nothing happens
    clock.t = 50
    with pytest.raises(DeadlineReached, match=r"epoch 2 \(fine_tune phase\)"):
        deadline.on_batch_end(trainer, 0.5, 8)
    assert deadline.fired


def test_the_final_run_never_starts_an_epoch_that_would_end_past_its_deadline_and_never_raises():
    clock = FakeClock()
    final, trainer = FinalDeadline(100.0, expected={"fine_tune": 40.0}, now=clock), _trainer(epochs=60)
    final.on_fit_start(trainer)
    assert not trainer.should_stop  # the head phase's epoch is unknown: it starts
    while not trainer.should_stop:
        final.on_epoch_start(trainer)
        clock.t += 7
        trainer.state.epoch += 1
        final.on_epoch_end(trainer, {})
    assert final.epochs == 14 and clock.t == 98  # 98 + 7 would pass 100
    fine = _trainer(epoch=14, epochs=20, phase="fine_tune")
    clock.t = 65  # say the head phase stopped early: 65 + the candidate's 40 s fine-tune epoch > 100
    final.on_fit_start(fine)
    assert fine.should_stop and final.fired


def test_the_backbone_pass_checks_the_clock_after_every_batch_and_is_timed_when_complete():
    clock = FakeClock()
    passes = PassClock(60.0, now=clock)
    reporter = reporter_with_clock(RecordingReporter(), passes)
    bar = reporter.progress(total=32, desc="backbone pass (train)", unit="img")
    for _ in range(2):
        clock.t += 10
        bar.update(16)
    bar.close()
    assert passes.passes == [(32, 20.0)] and passes.seconds_per_image() == pytest.approx(20 / 32)
    bar = reporter.progress(total=96, desc="backbone pass (val)", unit="img")
    clock.t += 30
    bar.update(16)
    clock.t += 30
    with pytest.raises(DeadlineReached, match=r"backbone pass \(val\)"):
        bar.update(16)
    bar.close()
    assert passes.fired and len(passes.passes) == 1  # a pass cut short is not a measurement


def test_the_final_run_s_time_is_measured_from_a_candidate_with_a_margin():
    est = Estimator(DataSize(1570, 337, 343), head_epochs=60, fine_tune_epochs=6, probed=1.0)
    first = LADDER[0]
    prior = est.final_seconds(first)
    # the candidate ran 90 s, 50 s of which its pass over 1907 images: 40 s a fold is what its final run trains
    est.record_run(first, seconds=90.0, pass_seconds=50.0, pass_images=1907)
    assert est.pass_s == pytest.approx(50 / 1907)
    measured = est.final_seconds(first)
    evaluation = est.evaluation_seconds(first)
    assert measured == pytest.approx((40.0 + evaluation) * MARGIN) and measured != prior
    assert evaluation > 343 * 50 / 1907  # the test split through the whole model, at the measured speed
    folds = Estimator(DataSize(120, 60, 60, folds=2), head_epochs=60, fine_tune_epochs=6)
    folds.record_run(first, seconds=100.0, pass_seconds=20.0, pass_images=180)
    # 40 s a fold trained on 90 images; the final run trains on 120
    assert folds.final_seconds(first) == pytest.approx((40.0 * 120 / 90 + folds.evaluation_seconds(first)) * MARGIN)


def _cached(make_config, disease_root, **training):
    return make_config(data={"root": str(disease_root)}, model={"freeze_backbone": True},
                       training={"feature_cache": True, "epochs": 3, **training},
                       evaluation={"split": "val", "bootstrap_samples": 0})


def test_a_real_backbone_pass_stops_at_the_deadline(disease_root, make_config):
    config = _cached(make_config, disease_root)
    now = FakeClock()

    class Late(RecordingReporter):  # the deadline passes as the backbone pass starts (every bar checks the clock)
        def progress(self, *, total, desc, unit="it", initial=0):
            now.t = 100 if desc.startswith("backbone pass") else now.t
            return super().progress(total=total, desc=desc, unit=unit, initial=initial)

    with pytest.raises(DeadlineReached, match=r"backbone pass \(train\)"):
        pipeline.train(config, reporter=reporter_with_clock(Late(), PassClock(50.0, now=now)))
    run = RunDir(config.output_dir / config.experiment / config.run_name)
    status = run.read_status()
    assert status["status"] == "stopped" and "deadline" in status["reason"]


def test_a_real_training_loop_stops_inside_an_epoch_and_the_final_run_before_one(disease_root, make_config):
    clock = FakeClock()

    class Tick:  # each step takes 1 s of the fake clock, each epoch 10 s
        def on_batch_end(self, trainer, loss, images):
            clock.t += 1

        def on_epoch_end(self, trainer, metrics):
            clock.t += 10

    class Busier:  # the machine gets busy in the second epoch: a step takes 500 s instead of 1 s
        def on_batch_end(self, trainer, loss, images):
            clock.t += 1 if trainer.state.epoch == 0 else 500

    with pytest.raises(DeadlineReached, match="epoch 2"):  # the first epoch ended long before 1000 s
        pipeline.train(_cached(make_config, disease_root), callbacks=[Busier(), CandidateDeadline(1000.0, now=clock)])
    clock.t = 0
    final = FinalDeadline(25.0, expected={}, now=clock)
    config = make_config(data={"root": str(disease_root)}, run_name="final", model={"freeze_backbone": True},
                         training={"feature_cache": True, "epochs": 5}, evaluation={"bootstrap_samples": 0})
    result = pipeline.train(config, callbacks=[Tick(), final])
    assert final.fired and 1 <= final.epochs < 5 and result.state.epoch == final.epochs
    assert RunDir(result.run_dir).read_status()["status"] == "completed" and "accuracy" in result.metrics


@pytest.mark.parametrize("stop", ["KeyboardInterrupt", "Interrupted"])
def test_ctrl_c_during_a_candidate_names_its_folder(disease_root, make_config, monkeypatch, stop):
    """Ctrl-C in a candidate's backbone pass (a KeyboardInterrupt) or its training loop (Interrupted, once the loop
    saved ``last``) ends budget mode with the candidate's folder named, not with a resume hint for it. The
    candidate's run is replaced by one that is interrupted at once: what is tested is what budget mode says."""
    from plantpheno.budget import CandidateInterrupted, leaderboard
    from plantpheno.budget import runner
    from plantpheno.budget.settings import plan_budget
    from plantpheno.training.feature_store import FeatureStore
    from plantpheno.training.loop import Interrupted, TrainState

    config = make_config(data={"root": str(disease_root)}, run_name="chosen")
    plan = plan_budget(config, reporter=RecordingReporter())
    estimator = Estimator(DataSize(10, 5, 5), head_epochs=2, fine_tune_epochs=0)
    loop = runner._Loop(plan, estimator, RecordingReporter(), start=0.0, budget_s=1e9, manifests=[])

    def interrupted(config, **kwargs):
        raise KeyboardInterrupt if stop == "KeyboardInterrupt" else Interrupted("SIGTERM", TrainState())

    monkeypatch.setattr(runner.pipeline, "train", interrupted)
    row = leaderboard.Row(2, "lite0-224-crop-ft1", "", {})
    with pytest.raises(CandidateInterrupted) as caught:
        loop.run(row, LADDER[1], FeatureStore())
    folder = config.output_dir / "default-candidates" / "chosen-r02-lite0-224-crop-ft1"
    assert caught.value.folder == folder and caught.value.reason == ("SIGINT" if stop == "KeyboardInterrupt"
                                                                      else "SIGTERM")
    assert f"during candidate lite0-224-crop-ft1 (its run folder: {folder})" in str(caught.value)
    assert "no final run was trained" in str(caught.value)


def test_the_command_line_says_which_candidate_was_interrupted(write_config, monkeypatch, capsys):
    from pathlib import Path

    import plantpheno.budget as budget
    from plantpheno.cli import main

    def interrupted(config, **kwargs):
        raise budget.CandidateInterrupted("SIGINT", "lite0-224-crop-head", Path("/runs/c/r01"), Path("/runs/c"))

    monkeypatch.setattr(budget, "train_in_budget", interrupted)
    assert main(["train", str(write_config(data={"root": "leaves"})), "--budget", "10m"]) == 130
    err = capsys.readouterr().err
    assert err.startswith("plantpheno: budget mode interrupted by SIGINT during candidate lite0-224-crop-head "
                          "(its run folder: /runs/c/r01)") and "--resume" not in err


def test_a_fine_tune_phase_that_would_not_end_in_time_does_not_start():
    clock = FakeClock(70.0)
    deadline = CandidateDeadline(100.0, expected={"fine_tune": 40.0}, now=clock)
    fine = _trainer(epoch=60, epochs=66, phase="fine_tune")
    deadline.on_fit_start(fine)  # 70 + an estimated 40 s epoch > 100: the head phase's best is what is scored
    assert fine.should_stop and deadline.fired
    est = Estimator(DataSize(1570, 337, 343), head_epochs=60, fine_tune_epochs=6, probed=2.0)
    assert est.fine_tune_epoch_seconds(LADDER[2]) == pytest.approx((1570 * 0.012 + 0.25) * 2.0)


def test_the_report_says_which_candidates_were_cut_or_dropped_and_how_far_the_final_run_trained():
    from plantpheno.evaluation.report_sections import budget

    board = {"metric": "accuracy", "chosen": "a", "folds": 1, "budget_s": 600, "elapsed_s": 640, "rule": "r",
             "final_cut": True, "final_epochs": 41, "final_planned_epochs": 60,
             "candidates": [{"rung": 1, "name": "a", "status": "done", "score": 0.9, "se": 0.01, "seconds": 100},
                            {"rung": 2, "name": "b", "status": "cut", "score": 0.8, "se": 0.01, "seconds": 90,
                             "note": "cut: scored on the best epoch it reached"},
                            {"rung": 3, "name": "c", "status": "dropped", "note": "dropped: no validation figure"}]}
    html = budget(board)
    assert "cut: scored on the best epoch it reached" in html and "dropped: no validation figure" in html
    assert "it trained 41 of its 60 planned epochs" in html


def test_the_final_run_s_schedule_is_fitted_to_the_time_left_not_cut_off():
    from plantpheno.budget.deadline import fit_schedule

    # fits: the recipe's epochs
    assert fit_schedule(100.0, {"train": (60, 1.0)}) == {"train": 60}
    assert fit_schedule(100.0, {"train": (60, 1.0), "fine_tune": (6, 5.0)}) == {"train": 60, "fine_tune": 6}
    # the load measured on the PlantVillage subset: 60 head epochs at ~3 s with ~50 s left -> 16 epochs
    assert fit_schedule(50.0, {"train": (60, 3.0)}) == {"train": 16}
    # both phases in the same ratio, never more than fits
    fitted = fit_schedule(90.0, {"train": (60, 1.0), "fine_tune": (6, 10.0)})
    assert fitted == {"train": 45, "fine_tune": 4} and 45 * 1.0 + 4 * 10.0 <= 90.0
    # a final run has to end as a model: at least one head epoch, even with no time; a fine-tune epoch only if it fits
    assert fit_schedule(-5.0, {"train": (60, 1.0), "fine_tune": (6, 10.0)}) == {"train": 1, "fine_tune": 0}
    assert fit_schedule(12.0, {"train": (60, 1.0), "fine_tune": (6, 100.0)}) == {"train": 1, "fine_tune": 0}


def test_the_fitted_schedule_reaches_the_final_run_s_config_with_its_warmups_shrunk(disease_root, make_config):
    from plantpheno.budget.ladder import LADDER
    from plantpheno.budget.settings import final_config, plan_budget

    plan = plan_budget(make_config(data={"root": str(disease_root)}), reporter=RecordingReporter())
    head = next(c for c in LADDER if not c.blocks)
    tuned = next(c for c in LADDER if c.blocks)
    assert final_config(plan, head).training.epochs == plan.head_epochs  # nothing fitted: the recipe's
    config = final_config(plan, tuned, epochs={"train": 10, "fine_tune": 2})
    assert config.training.epochs == 10 and config.training.fine_tune.epochs == 2
    assert config.training.fine_tune.warmup_epochs < 2 and config.training.warmup_epochs < 10
