"""Search spaces, tuning settings and the study queue, without training anything."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from plantpheno.cli import main
from plantpheno.config import load_config
from plantpheno.errors import ConfigError
from plantpheno.recipes import RECIPES_DIR, SPACE_FOLDER
from plantpheno.tuning import (
    TuneSettings,
    check_space,
    describe_plan,
    load_tuning_file,
    make_plan,
    merge_settings,
    parse_space,
)

TUNE_FILES = sorted((RECIPES_DIR / SPACE_FOLDER).rglob("*.yaml"))


def test_distributions_and_plain_lists_parse_in_order():
    space = parse_space({
        "training.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "data.batch_size": {"type": "int", "low": 8, "high": 32, "step": 8},
        "training.optimizer": {"type": "categorical", "choices": ["adamw", "sgd"]},
        "model.dropout": [0.0, 0.2],
    })
    assert space.fields == ("training.learning_rate", "data.batch_size", "training.optimizer", "model.dropout")
    assert parse_space(space.to_yaml()) == space


@pytest.mark.parametrize(("spec", "expected"), [
    ({"type": "float", "low": 0.1, "high": 0.01}, "low <= high must hold, but got (low=0.1, high=0.01)"),
    ({"type": "float", "low": 0.0, "high": 0.1, "log": True}, "low > 0 for a log scale"),
    ({"type": "int", "low": 8, "high": 30, "step": 8}, "high - low to be a multiple of step"),
    ({"type": "int", "low": 1.5, "high": 3}, "low to be an integer"),
    ({"type": "uniform", "low": 0, "high": 1}, "type: float, int or categorical"),
    ({"type": "float", "low": 0, "high": 1, "lg": True}, "unknown: lg"),
    ({"type": "categorical", "choices": []}, "a non-empty list of values"),
    ([[0.5, 1.0]], "single values"),
    ({"type": "float", "low": 0, "high": 1, "step": 0.5, "grid_points": 3}, "grid_points >= 2 and no step"),
    ({"type": "float", "low": 0, "high": 1, "grid_points": 1}, "grid_points >= 2 and no step"),
    ({"type": "float", "low": 0, "high": 1, "grid_points": 2.5}, "grid_points to be an integer"),
    (0.3, "a list of values, or a mapping"),
])
def test_malformed_distributions_name_field_value_and_expectation(spec, expected):
    with pytest.raises(ConfigError) as info:
        parse_space({"model.dropout": spec})
    message = str(info.value)
    assert "space.model.dropout: got " in message and expected in message


def test_space_is_checked_against_the_training_schema_with_every_problem_at_once(make_config):
    space = parse_space({
        "training.lr": {"type": "float", "low": 1e-4, "high": 1e-2},
        "training.learning_rate": {"type": "float", "low": 1e-4, "high": 20.0, "log": True},
        "training.optimizer": ["adamw", "adamx"],
        "training.epochs": {"type": "float", "low": 1, "high": 10},  # a float range on an integer field
        "run_name": ["a", "b"],
        "model.dropout": [0.0, 0.5],
    })
    with pytest.raises(ConfigError) as info:
        check_space(space, make_config(data={"root": "leaves"}))
    lines = [line.strip() for line in str(info.value).splitlines()[1:]]
    assert len(lines) == 5, lines
    assert lines[0].startswith("space.training.lr: unknown config field; expected one of: training.epochs,")
    assert "space.training.learning_rate: value 20.0" in lines[1]
    assert "training.learning_rate: got 20.0; expected less than or equal to 10" in lines[1]
    assert "space.training.optimizer: value 'adamx'" in lines[2] and "'adam', 'adamw' or 'sgd'" in lines[2]
    assert "space.training.epochs: value" in lines[3] and "valid integer" in lines[3]
    assert lines[4].startswith("space.run_name: set by the tuner")


def test_grid_enumerates_every_combination_first_field_slowest():
    space = parse_space({"model.dropout": [0.0, 0.5], "data.batch_size": {"type": "int", "low": 8, "high": 16,
                                                                            "step": 4},
                         "training.momentum": {"type": "float", "low": 0.8, "high": 0.9, "step": 0.05}})
    grid = space.grid()
    assert len(grid) == 2 * 3 * 3
    assert grid[0] == {"model.dropout": 0.0, "data.batch_size": 8, "training.momentum": 0.8}
    assert grid[-1] == {"model.dropout": 0.5, "data.batch_size": 16, "training.momentum": 0.9}
    assert len({tuple(p.values()) for p in grid}) == len(grid)
    with pytest.raises(ConfigError, match="space.training.learning_rate: got .*grid_points: N .*--sampler grid"):
        parse_space({"training.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2}}).grid()


def test_a_capped_grid_samples_the_whole_grid_reproducibly_and_covers_every_value(make_config):
    config = make_config(data={"root": "leaves"})
    # 3 x 3 x 6 = 54 combinations capped at 20: the first 20 in grid order miss the highest learning rate
    space = parse_space({"training.learning_rate": [1e-4, 1e-3, 1e-2], "model.dropout": [0.0, 0.2, 0.4],
                         "data.batch_size": [4, 8, 12, 16, 20, 24]})
    assert 1e-2 not in {p["training.learning_rate"] for p in space.grid()[:20]}
    for seed in range(5):
        plan = make_plan(config, space, TuneSettings(sampler="grid", trials=20, seed=seed))
        assert plan.n_trials == len(plan.grid) == 20 and plan.grid_size == 54
        assert len({tuple(p.values()) for p in plan.grid}) == 20  # no combination twice
        for field, values in zip(space.fields, ([1e-4, 1e-3, 1e-2], [0.0, 0.2, 0.4], [4, 8, 12, 16, 20, 24]),
                                 strict=True):
            assert sorted({p[field] for p in plan.grid}) == values, (seed, field)
        again = make_plan(config, space, TuneSettings(sampler="grid", trials=20, seed=seed))
        assert again.grid == plan.grid  # the same seed, the same trials
    grids = {str(make_plan(config, space, TuneSettings(sampler="grid", trials=20, seed=s)).grid) for s in range(5)}
    assert len(grids) > 1  # the seed chooses
    # 6 trials are just enough to cover the 6 batch sizes; the seed defaults to the config's
    six = make_plan(config, space, TuneSettings(sampler="grid", trials=6))
    assert sorted(p["data.batch_size"] for p in six.grid) == [4, 8, 12, 16, 20, 24] and six.settings.seed == 0
    assert "6 of its 54 combinations, sampled with seed 0" in "\n".join(describe_plan(six))
    full = make_plan(config, space, TuneSettings(sampler="grid"))
    assert full.grid == tuple(space.grid())  # uncapped: the whole grid in its written order


def test_float_ranges_with_grid_points_are_gridded_and_still_sampled_whole():
    space = parse_space({"training.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True,
                                                    "grid_points": 3},
                         "model.dropout": {"type": "float", "low": 0.0, "high": 0.3, "grid_points": 4}})
    assert [p["training.learning_rate"] for p in space.grid()[::4]] == [1e-4, 1e-3, 1e-2]
    assert [p["model.dropout"] for p in space.grid()[:4]] == [0.0, 0.1, 0.2, 0.3]
    assert parse_space(space.to_yaml()) == space  # what a study stores reads back the same
    assert "3 points in a grid" in space.describe()[0]


def test_plan_resolves_metric_direction_budget_and_folders(make_config):
    config = make_config(data={"root": "leaves"})
    space = parse_space({"model.dropout": [0.0, 0.2, 0.4]})
    plan = make_plan(config, space, TuneSettings(study="s1", sampler="grid", trials=2))
    assert (plan.metric, plan.direction, plan.n_trials) == ("val/macro_f1", "maximize", 2)
    assert len(plan.grid) == 2 and set(map(str, plan.grid)) < set(map(str, space.grid()))
    assert plan.study_dir == config.output_dir / "default" / "s1"
    assert plan.storage_url == f"journal://{(plan.study_dir / 'study.log').resolve()}"
    trial = plan.trial_config({"model.dropout": 0.2}, number=7, parent_run_id="abc")
    assert trial.model.dropout == 0.2 and trial.run_name == "trial-0007"
    assert trial.output_dir / trial.experiment / trial.run_name == plan.study_dir / "trial-0007"
    assert trial.tracking.wandb.group == "s1" and trial.tracking.mlflow.parent_run_id is None  # no mlflow backend
    assert plan.best_config({"model.dropout": 0.4}) == config.model_copy(
        update={"model": config.model.model_copy(update={"dropout": 0.4})})
    random = make_plan(config, space, TuneSettings(sampler="random", metric="val/loss"))
    assert (random.direction, random.n_trials, random.grid) == ("minimize", 20, None)
    with pytest.raises(ConfigError, match=r"tuning.direction: got 'minimize'; expected 'maximize' for val/accuracy"):
        make_plan(config, space, TuneSettings(metric="val/accuracy", direction="minimize"))
    with pytest.raises(ConfigError, match=r"tuning.metric: got 'val/mae'; expected one of val/loss, val/accuracy"):
        make_plan(config, space, TuneSettings(metric="val/mae"))


def test_tuning_file_settings_and_command_line_overrides(tmp_path):
    path = tmp_path / "my-space.yaml"
    path.write_text("tuning: {sampler: random, trials: 5}\nspace: {model.dropout: [0.0, 0.1]}\n")
    _, settings = load_tuning_file(path)
    assert (settings.study, settings.sampler, settings.trials) == ("my-space", "random", 5)
    merged = merge_settings(settings, {"trials": 9, "sampler": None, "pruner": "none"})
    assert (merged.sampler, merged.trials, merged.pruner) == ("random", 9, "none")
    path.write_text("tuning: {sampler: bayes, trails: 5}\nspace: {model.dropout: [0.0]}\nextra: 1\n")
    with pytest.raises(ConfigError, match="unknown section"):
        load_tuning_file(path)
    path.write_text("tuning: {sampler: bayes, trails: 5}\nspace: {model.dropout: [0.0]}\n")
    with pytest.raises(ConfigError) as info:
        load_tuning_file(path)
    assert "tuning.sampler: got 'bayes'; expected 'grid', 'random' or 'tpe'" in str(info.value)
    assert "tuning.trails: unknown setting; expected one of: study, sampler" in str(info.value)
    with pytest.raises(ConfigError, match="tuning.trials: got 0"):
        merge_settings(settings, {"trials": 0})


@pytest.mark.parametrize("path", TUNE_FILES, ids=[p.name for p in TUNE_FILES])
def test_shipped_tuning_files_fit_the_demo_config(path):
    space, settings = load_tuning_file(path)
    plan = make_plan(load_config("demo"), space, settings)
    assert describe_plan(plan)


def test_dry_run_prints_the_grid_and_an_invalid_space_fails_before_any_trial(write_config, tmp_path, capsys):
    config = write_config(data={"root": str(tmp_path / "leaves")})
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"space": {"model.dropout": [0.0, 0.3], "training.optimizer": ["adam", "sgd"]}}))
    assert main(["tune", str(config), str(space), "--sampler", "grid", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "grid: 4 trials" in out and "model.dropout=0.3  training.optimizer='sgd'" in out
    assert not (tmp_path / "runs").exists()
    space.write_text(yaml.safe_dump({"space": {"training.learning_rate": {"type": "float", "low": 0.1,
                                                                             "high": 0.01}}}))
    assert main(["tune", str(config), str(space), "--trials", "3"]) == 2
    assert "space.training.learning_rate: got" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------------------------------
# The queue: exactly N trials whatever the number of workers; dead workers' trials retried.
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def queue_plan(make_config, tmp_path):
    def build(sampler: str = "random", trials: int = 3):
        space = parse_space({"model.dropout": [0.0, 0.1, 0.2]})
        return make_plan(make_config(data={"root": "leaves"}), space,
                         TuneSettings(study="q", sampler=sampler, trials=trials, grace_period=60))
    return build


def _study(plan):
    import optuna

    from plantpheno.tuning.storage import open_storage

    plan.study_dir.mkdir(parents=True, exist_ok=True)
    return optuna.create_study(study_name=plan.name, storage=open_storage(plan.storage_url),
                               direction=plan.direction, load_if_exists=True)


def test_concurrent_top_ups_never_run_more_than_the_budget(queue_plan):
    from optuna.trial import TrialState

    from plantpheno.tuning.queue import claim_next, top_up

    plan = queue_plan(trials=3)
    study = _study(plan)
    assert top_up(study, plan) == 3 and top_up(study, plan) == 0
    study.enqueue_trial({})  # what a second launcher racing the first would have added
    ran = []
    while (trial := claim_next(study, plan)) is not None:
        ran.append(trial.number)
        study.tell(trial, plan.space.suggest(trial)["model.dropout"])
    assert ran == [0, 1, 2]
    surplus = study.get_trials()[3]
    assert surplus.state == TrialState.FAIL and surplus.user_attrs["surplus"] is True


def test_trials_of_a_dead_worker_fail_and_run_again_with_the_same_values(queue_plan):
    from optuna.trial import TrialState

    from plantpheno.tuning.queue import (
        HEARTBEAT_ATTR,
        HOST,
        WORKER_ATTR,
        claim_next,
        fail_stale_trials,
        top_up,
        trial_error,
        trial_values,
    )

    plan = queue_plan(sampler="grid")
    study = _study(plan)
    top_up(study, plan)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for worker in ({"host": HOST, "pid": dead.pid, "started": time.time() - 5},  # this machine, process gone
                   {"host": "elsewhere", "pid": 1, "started": 0.0}):  # another machine, heartbeat too old
        trial = claim_next(study, plan)
        plan.space.suggest(trial)
        trial.set_user_attr(WORKER_ATTR, worker)
        trial.set_user_attr(HEARTBEAT_ATTR, time.time() - 61)
    assert fail_stale_trials(study, grace_period=plan.settings.grace_period) == [0, 1]
    assert top_up(study, plan) == 2
    trials = study.get_trials()
    assert [t.state for t in trials[:2]] == [TrialState.FAIL] * 2
    assert "ended while the trial was running" in trial_error(study, trials[0])
    assert "no heartbeat from worker 1 on elsewhere" in trial_error(study, trials[1])
    retries = {t.user_attrs["retry_of"]: trial_values(t) for t in trials[3:]}
    assert retries == {0: {"model.dropout": 0.0}, 1: {"model.dropout": 0.1}}


@pytest.mark.parametrize(("pruner", "kind"), [("median", "MedianPruner"), ("hyperband", "HyperbandPruner"),
                                              ("none", "NopPruner")])
def test_pruners_and_samplers_follow_the_settings(queue_plan, pruner, kind):
    from plantpheno.tuning.worker import _pruner, _sampler

    plan = queue_plan()
    plan = make_plan(plan.config, plan.space, plan.settings.model_copy(update={"pruner": pruner, "sampler": "tpe"}))
    assert type(_pruner(plan)).__name__ == kind
    if pruner == "hyperband":
        assert _pruner(plan)._max_resource == plan.config.training.epochs
    sampler = _sampler(plan)
    assert type(sampler).__name__ == "TrialSeededSampler" and type(sampler.inner).__name__ == "TPESampler"


def _complete(params: dict, value: float = 0.5):
    import optuna

    dists = {k: optuna.distributions.CategoricalDistribution([v]) for k, v in params.items()}
    return optuna.trial.create_trial(params=params, distributions=dists, value=value)


def test_parameter_importance_needs_enough_trials_and_two_varied_parameters():
    from plantpheno.tuning.report import MIN_IMPORTANCE_TRIALS, importance_params

    fields = ("training.learning_rate", "model.dropout", "data.batch_size")
    many = [_complete({"training.learning_rate": 10.0 ** -(i % 4), "model.dropout": 0.1 * (i % 3),
                       "data.batch_size": 8}) for i in range(MIN_IMPORTANCE_TRIALS)]
    # the batch size never varied: it is not ranked
    assert importance_params(many, fields) == (["training.learning_rate", "model.dropout"], None)
    varied, reason = importance_params(many[:MIN_IMPORTANCE_TRIALS - 1], fields)
    assert varied == [] and f"at least {MIN_IMPORTANCE_TRIALS} complete trials to rank more than noise, the study has 9" in reason
    one = [_complete({"training.learning_rate": 10.0 ** -i, "model.dropout": 0.0, "data.batch_size": 8})
           for i in range(MIN_IMPORTANCE_TRIALS)]
    varied, reason = importance_params(one, fields)
    assert varied == [] and "only training.learning_rate varied" in reason


def test_the_study_summary_names_the_trivial_baseline_and_warns_below_it(tmp_path):
    from plantpheno.tuning.report import TuneResult

    def result(verdict: str | None) -> TuneResult:
        baseline = None if verdict is None else {
            "kind": "majority class", "split": "val", "value": 0.1, "verdict": verdict,
            "text": f"{'beats' if verdict == 'better' else 'does NOT beat'} the baseline: accuracy 0.5 vs 0.25"}
        return TuneResult(study="s", study_dir=tmp_path, storage="x", metric="val/macro_f1", direction="maximize",
                          best_value=0.5, best_params={"model.dropout": 0.1}, best_trial=3, best_run_dir="r",
                          counts={"COMPLETE": 4}, baseline=baseline)

    good, bad, unknown = result("better"), result("worse"), result(None)
    assert good.beats_baseline is True and bad.beats_baseline is False and unknown.beats_baseline is None
    assert "the best trial beats the baseline: accuracy 0.5 vs 0.25 (on the val split, against the majority " \
           "class baseline)" in good.summary()
    assert any(line.startswith("WARNING: the best trial does NOT beat the baseline") for line in bad.summary())
    assert "trivial baseline: not known" in "\n".join(unknown.summary())
