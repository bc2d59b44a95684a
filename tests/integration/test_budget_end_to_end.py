"""Budget mode end to end on tiny synthetic leaves (issue 33): no candidate is evaluated on the test split before
the choice, the chosen candidate becomes a normal run evaluated on test once, with the leaderboard in its folder,
its report and its tracking log, and the backbone pass of a candidate serves the later ones."""

from __future__ import annotations

import json
from pathlib import Path

from plantpheno import pipeline
from plantpheno.budget import train_in_budget
from plantpheno.budget.ladder import Candidate
from plantpheno.run.folder import RunDir

TINY_LADDER = [Candidate("tf_efficientnet_lite0", 32, 0, reason="head only"),
               Candidate("tf_efficientnet_lite0", 32, 1, reason="one block fine-tuned")]


class Recorder:
    """A reporter that keeps every message in the shared event list."""

    def __init__(self, events: list[tuple[str, str]]) -> None:
        self.events = events

    def info(self, message: str) -> None:
        self.events.append(("info", message))

    def warning(self, message: str) -> None:
        self.events.append(("warning", message))

    def progress(self, **kwargs):
        from plantpheno.reporting import LoggingReporter

        return LoggingReporter().progress(**kwargs)


def test_no_candidate_is_evaluated_on_test_before_the_choice(disease_root, make_config, monkeypatch):
    events: list[tuple[str, str]] = []
    real = pipeline.evaluate_split

    def recorded(model, loaders, *, split, config, run, **kwargs):
        events.append(("evaluate", f"{split} {run.path}"))
        return real(model, loaders, split=split, config=config, run=run, **kwargs)

    monkeypatch.setattr(pipeline, "evaluate_split", recorded)
    config = make_config(data={"root": str(disease_root)}, budget={"folds": 2}, run_name="chosen",
                         evaluation={"report": True, "bootstrap_samples": 200})
    result = train_in_budget(config, budget_s=1800, reporter=Recorder(events), ladder=TINY_LADDER)

    chose = next(i for i, (kind, m) in enumerate(events) if kind == "info" and m.startswith("budget: chose "))
    evaluations = [(i, m.split(" ", 1)) for i, (kind, m) in enumerate(events) if kind == "evaluate"]
    before = [(split, run) for i, (split, run) in evaluations if i < chose]
    after = [(split, run) for i, (split, run) in evaluations if i > chose]
    assert len(before) == 4 and all(split == "val" for split, _ in before)  # 2 candidates x 2 folds
    assert all("-candidates" in run for _, run in before)
    assert after == [("test", str(result.run.run_dir))]  # the test split, once, for the chosen candidate
    # the candidates' folders hold no test evaluation either
    for row in result.rows:
        assert row.status == "done" and len(row.folds) == 2 and row.se is not None
        for run in row.runs:
            assert not RunDir(Path(run)).eval("test").path.exists()

    run = RunDir(result.run.run_dir)
    assert run.read_status()["status"] == "completed" and run.path.name == "chosen"
    board = json.loads(run.budget_leaderboard.read_text())
    assert board["chosen"] == result.chosen.name and board["folds"] == 2 and "one standard error" in board["rule"]
    assert [c["name"] for c in board["candidates"]] == ["lite0-32-crop-head", "lite0-32-crop-ft1"]
    assert run.budget_leaderboard_csv.read_text().splitlines()[0].startswith("rung,candidate,status,val_accuracy")
    assert "Budget mode: candidates" in run.report_for("test").read_text()
    assert str(run.budget_leaderboard) in (run.path / "tracking" / "artifacts.txt").read_text()
    # progress: which candidate runs, its validation figure, the time left
    lines = [m for kind, m in events if kind == "info"]
    assert any(m.startswith("budget: candidate 1 lite0-32-crop-head") and "s left" in m for m in lines)
    assert any(m.startswith("budget: lite0-32-crop-head: validation accuracy") and "over 2 folds" in m for m in lines)
    # the backbone pass the candidates made served the final run
    assert any("reused from an earlier run's pass" in m for kind, m in events[chose:])

    from plantpheno.api import load_model

    image = next(disease_root.rglob("*.jpg"))  # the chosen run predicts like any run
    assert load_model(run.path).predict([image])[0].label in {d.name for d in disease_root.iterdir()}


def test_a_run_served_by_the_feature_store_trains_the_same_model(disease_root, make_config):
    """The store only saves the backbone pass: a run whose cached activations come from an earlier run's pass ends
    with the same weights and validation figures as the run that made them (and as a run without a store)."""
    import torch

    from plantpheno.training.feature_store import FeatureStore

    def config(name):
        return make_config(data={"root": str(disease_root)}, run_name=name,
                           model={"backbone": "tf_efficientnet_lite0", "pretrained": "bundled",
                                  "freeze_backbone": True},
                           training={"epochs": 2, "feature_cache": True, "progress_bar": False,
                                     "fine_tune": {"epochs": 1, "blocks": 1}},
                           evaluation={"split": "val", "bootstrap_samples": 0, "report": False})

    store = FeatureStore()
    plain = pipeline.train(config("plain"))
    made = pipeline.train(config("made"), feature_store=store)
    assert store.hits == 0 and store.misses > 0 and len(store.keys()) == 1
    served = pipeline.train(config("served"), feature_store=store)
    assert store.hits == store.misses  # every image of the second run came from the store
    for run in (made, served):
        assert run.metrics["accuracy"] == plain.metrics["accuracy"]
        weights = torch.load(RunDir(run.run_dir).best_checkpoint, weights_only=False)["model"]
        reference = torch.load(RunDir(plain.run_dir).best_checkpoint, weights_only=False)["model"]
        assert all(torch.equal(weights[k], reference[k]) for k in reference)


def test_budget_mode_on_a_trait_chooses_by_the_lowest_mae(rosette_manifest, make_config):
    """Regression: the metric is the MAE, lower is better, and the folds keep each plant's views together."""
    from plantpheno.reporting import RecordingReporter

    config = make_config(task="regression", data={"manifest": str(rosette_manifest)}, budget={"folds": 2},
                         run_name="chosen")
    result = train_in_budget(config, budget_s=1800, reporter=RecordingReporter(), ladder=TINY_LADDER[:1])
    board = json.loads(RunDir(result.run.run_dir).budget_leaderboard.read_text())
    assert board["metric"] == "mae" and board["direction"] == "min" and "lower is better" in board["rule"]
    assert result.chosen.status == "done" and len(result.chosen.folds) == 2
    assert result.run.metrics["headline_metric"] == "mae"
    folds = [line.split(",") for line in (Path(config.output_dir) / "default-candidates" / "folds" / "fold1.csv")
             .read_text().splitlines()[1:]]
    split_of_group: dict[str, set[str]] = {}
    for _, _, split, group in folds:
        split_of_group.setdefault(group, set()).add(split)
    assert all(len(s) == 1 for s in split_of_group.values())  # a plant's views in one fold
