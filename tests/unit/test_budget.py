"""Budget mode's parts without training: durations, the ladder, the estimator, the choice rule, the folds, the
feature store, and the refusals before anything runs (issue 33). The end-to-end run and the proof that no
candidate is evaluated on test before the choice: tests/integration/test_budget_end_to_end.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from plantpheno.budget import leaderboard
from plantpheno.budget.estimate import DataSize, Estimator
from plantpheno.budget.folds import assign_folds, validation_too_small
from plantpheno.budget.ladder import LADDER, Candidate, ladder_for, resize_of
from plantpheno.cli import main
from plantpheno.config import parse_duration
from plantpheno.data.datasets import PreparedData
from plantpheno.data.sources import Sample
from plantpheno.errors import ConfigError
from plantpheno.training.feature_store import FeatureStore


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("15m", 900), ("1h30m", 5400), ("2h", 7200),
                                                ("1.5m", 90), ("120", 120), (45, 45), (" 10M ", 600)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["15 minutes", "abc", "", "m", "1m30", "-5", "0s", "1d"])
def test_a_non_duration_is_refused_with_what_is_accepted(text):
    with pytest.raises(ValueError, match="duration such as 90s, 15m or 1h30m"):
        parse_duration(text)


def test_budget_time_in_a_config_is_checked_when_it_is_loaded(cfg):
    assert cfg(budget={"time": "15m"}).budget.seconds == 900
    with pytest.raises(ConfigError, match=r"budget\.time: got 'fifteen'; expected a positive duration such as 90s"):
        cfg(budget={"time": "fifteen"})


def test_the_command_line_refuses_a_non_duration_in_one_line(write_config, capsys):
    assert main(["train", str(write_config(data={"root": "leaves"})), "--budget", "15minutes"]) == 2
    err = capsys.readouterr().err
    assert err == "plantpheno: error: --budget: expected a duration such as 90s, 15m or 1h30m, got '15minutes'\n"
    assert main(["train", "--resume", "somewhere", "--budget", "5m"]) == 2
    assert "--budget" in capsys.readouterr().err


def test_the_ladder_runs_cheapest_first_and_gives_a_reason_for_every_rung():
    assert all(c.reason for c in LADDER)
    assert LADDER[0] == Candidate("tf_efficientnet_lite0", 224, 0, reason=LADDER[0].reason)
    heads = [c.relative_cost for c in LADDER if c.blocks == 0]
    assert heads == sorted(heads)  # head-only rungs by the cost of their backbone pass
    for c in LADDER:  # a backbone's head-only rung comes before its fine-tuned ones (the pass is made there)
        if c.blocks:
            first = next(i for i, o in enumerate(LADDER) if (o.backbone, o.image_size) == (c.backbone, c.image_size))
            assert LADDER[first].blocks == 0
    assert all(c.resize == "recipe" for c in ladder_for(aspect_varies=False))
    assert any(c.resize == "other" for c in ladder_for(aspect_varies=True))
    assert resize_of(LADDER[3], "crop") == "pad" and resize_of(LADDER[3], "pad") == "crop"


def test_the_estimator_counts_a_cached_pass_as_free_and_learns_from_the_runs():
    est = Estimator(DataSize(1600, 340, 340), head_epochs=60, fine_tune_epochs=6, probed=3.0)
    assert est.factor == 3.0  # the probe's, until a candidate has run
    first, fine = LADDER[0], LADDER[2]
    assert est.seconds(first, pass_cached=True) < est.seconds(first, pass_cached=False) / 2
    assert est.seconds(fine, pass_cached=True) > est.seconds(first, pass_cached=True)
    prior = est.prior(first, pass_cached=False)
    est.record(first, pass_cached=False, seconds=prior * 2)
    assert est.factor == pytest.approx(2)
    assert est.seconds(fine, pass_cached=True) == pytest.approx(2 * est.prior(fine, pass_cached=True))
    folds = Estimator(DataSize(30, 10, 10, folds=5), head_epochs=60, fine_tune_epochs=6)
    single = Estimator(DataSize(30, 10, 10), head_epochs=60, fine_tune_epochs=6)
    assert folds.seconds(first, pass_cached=True) > 4 * single.seconds(first, pass_cached=True)


def _row(rung, score, se, status="done"):
    return leaderboard.Row(rung, f"c{rung}", "", {}, status=status, score=score, se=se)


def test_the_choice_is_the_best_mean_with_ties_within_one_se_to_the_cheaper_rung():
    rows = [_row(1, 0.950, 0.01), _row(2, 0.958, 0.005), _row(3, 0.970, 0.005), _row(4, 0.99, 0.0, "cut")]
    assert leaderboard.choose(rows, direction="max").rung == 3  # 0.958 is more than one SE (0.005) below 0.970
    rows[2].se = 0.015
    assert leaderboard.choose(rows, direction="max").rung == 2  # 0.958 is within one SE of 0.970, 0.950 is not
    rows[2].se = 0.025
    assert leaderboard.choose(rows, direction="max").rung == 1  # now both are: the earliest rung wins
    maes = [_row(1, 0.50, 0.02), _row(2, 0.40, 0.02), _row(3, 0.41, 0.01)]
    assert leaderboard.choose(maes, direction="min").rung == 2  # lower is better; 0.41 is tied but later
    assert leaderboard.choose([_row(1, None, None, "skipped")], direction="max") is None
    cut = [_row(1, 0.5, 0.1, "cut"), _row(2, None, None, "not tried")]  # only when no candidate finished
    assert leaderboard.choose(cut, direction="max") is None
    assert leaderboard.choose(cut, direction="max", status="cut").rung == 1


def test_a_score_has_a_spread_over_folds_or_from_the_bootstrap_interval():
    row = _row(1, None, None)
    leaderboard.summarise(row, [(0.9, None), (0.8, None), (0.7, None)], z=1.96)
    assert row.score == pytest.approx(0.8) and row.se == pytest.approx(0.1 / 3 ** 0.5)
    leaderboard.summarise(row, [(0.9, (0.86, 0.94))], z=2.0)
    assert row.se == pytest.approx(0.02) and row.interval == [0.86, 0.94]


def _prepared(train: int, val: int, *, groups: int | None = None, classes: int = 2) -> PreparedData:
    def samples(split, n, offset):
        return [Sample(Path(f"/x/{split}{i}.jpg"), f"c{i % classes}", split,
                       None if groups is None else f"g{(i + offset) % groups}") for i in range(n)]
    splits = {"train": samples("train", train, 0), "val": samples("val", val, 1), "test": samples("test", 5, 2)}
    return PreparedData("classification", splits, [f"c{i}" for i in range(classes)], "fp")


def test_a_small_validation_split_is_named_and_folds_keep_groups_together():
    assert "60 images" in validation_too_small(_prepared(200, 60))
    assert "class 'c0'" in validation_too_small(_prepared(600, 240, classes=15))  # 16 a class < 20
    assert validation_too_small(_prepared(900, 300)) is None
    prepared = _prepared(90, 30, groups=12)
    folds = assign_folds(prepared, 5, seed=0)
    assert len(folds) == 120 and set(folds.values()) == set(range(5))
    by_group: dict[str, set[int]] = {}
    for s in prepared.splits["train"] + prepared.splits["val"]:
        by_group.setdefault(s.group, set()).add(folds[s.path])
    assert all(len(f) == 1 for f in by_group.values())
    assert not any(s.path in folds for s in prepared.splits["test"])


def test_the_feature_store_serves_only_complete_passes_and_keeps_the_latest():
    store = FeatureStore(max_passes=2)
    paths = [Path("a"), Path("b"), Path("c")]
    store.put("p1", paths[:2], torch.tensor([[1.0], [2.0]]))
    assert store.get("p1", paths) is None  # "c" was never passed
    assert store.get("p1", [paths[1], paths[0]]).tolist() == [[2.0], [1.0]]  # any order, any split
    store.put("p2", paths, torch.zeros(3, 1))
    store.put("p3", paths, torch.ones(3, 1))
    assert "p1" not in store and store.keys() == ["p2", "p3"]
    with pytest.raises(ValueError, match="2 outputs for 3 paths"):
        store.put("p4", paths, torch.zeros(2, 1))


def test_a_budget_below_the_cheapest_candidate_says_how_much_it_needs(disease_root, make_config):
    from plantpheno.budget import train_in_budget
    from plantpheno.reporting import LoggingReporter

    config = make_config(data={"root": str(disease_root)})
    with pytest.raises(ConfigError, match=r"a budget of 5 s is below the cheapest candidate's estimated cost.*"
                                          r"need about \d+ s.*give at least --budget \d+[sm]"):
        train_in_budget(config, budget_s=5, reporter=LoggingReporter())
    assert not (Path(config.output_dir) / "default").exists()  # no run folder was made


def test_a_model_outside_the_ladder_is_named_with_what_budget_mode_tries(disease_root, make_config):
    from plantpheno.budget.settings import plan_budget

    warnings: list[str] = []

    class Recorder:
        def info(self, message):
            pass

        def warning(self, message):
            warnings.append(message)

    plan = plan_budget(make_config(data={"root": str(disease_root)}), reporter=Recorder())
    assert "model.backbone=test_resnet is not one of the ladder's backbones" in warnings[0]
    assert "tf_efficientnet_lite0" in warnings[0] and plan.recipe == "classify"
    assert plan.base.training.feature_cache and plan.base.model.pretrained == "bundled"


def test_the_ladder_is_one_table_and_the_guide_lists_its_rungs_in_order():
    from plantpheno.budget.ladder import RUNGS

    assert [(c.backbone, c.image_size, c.blocks, c.resize, c.reason) for c in LADDER] == list(RUNGS)
    guide = (Path(__file__).resolve().parents[2] / "docs" / "guide" / "budget.md").read_text()
    rows = [line.split("|")[2].strip() for line in guide.splitlines() if line.startswith("| ") and
            line.split("|")[1].strip().isdigit()]
    shown = [(f"Lite{b[-1]}", f"{size} px", "head only" if not blocks else f"{blocks} block")
             for b, size, blocks, _, _ in RUNGS]
    assert len(rows) == len(RUNGS)
    for row, (lite, px, tune) in zip(rows, shown, strict=True):
        assert row.startswith(f"{lite}, {px}") and (tune in row or tune.replace(" block", " blocks") in row), row
