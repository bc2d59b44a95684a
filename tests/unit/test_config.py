"""Config loading: shipped configs, overrides, and errors that name field, value and expectation."""

from __future__ import annotations

from pathlib import Path

import pytest

from plantpheno.config import config_to_yaml, load_config
from plantpheno.errors import ConfigError
from plantpheno.recipes import RECIPES_DIR, SPACE_FOLDER, list_recipes

# every YAML file in the package's recipes folder; search spaces (recipes/tune/) are not training configs:
# tests/unit/test_tuning_space.py loads those
SHIPPED = sorted(p for p in RECIPES_DIR.rglob("*.yaml") if SPACE_FOLDER not in p.relative_to(RECIPES_DIR).parts)


def test_recipes_are_shipped_under_their_names():
    assert {p.stem for p in SHIPPED} == {"classify", "classify_adapt", "classify_full", "classify_scratch", "traits",
                                         "traits_full", "demo"}
    assert [r.path for r in list_recipes() if r.kind == "config"] == SHIPPED


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_config_loads_and_round_trips(path, tmp_path):
    config = load_config(path)
    again = tmp_path / "resolved.yaml"
    again.write_text(config_to_yaml(config))
    assert load_config(again) == config


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_config_builds_its_model_offline(path, monkeypatch):
    """As shipped, no config needs the network: its weights are bundled, a local file, or none."""
    from plantpheno.models import build_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = load_config(path)
    assert config.model.pretrained is not True, f"{path.name} downloads weights (model.pretrained: true)"
    regression = config.task == "regression"
    model = build_model(config.model, num_outputs=1 if regression else 3, regression=regression)
    assert model.get_classifier().out_features == (1 if regression else 3)


def test_overrides_parse_values_and_nested_fields(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: {root: leaves}\n")
    config = load_config(path, ["training.epochs=7", "data.augment.crop_scale=[0.5, 0.9]", "model.pretrained=w.pt",
                                "training.early_stopping.patience=3", "model.dropout=0.25", "task=regression"])
    assert config.training.epochs == 7
    assert config.data.augment.crop_scale == (0.5, 0.9)
    assert config.model.pretrained == Path("w.pt")
    assert config.training.early_stopping.patience == 3
    assert config.model.dropout == 0.25
    assert config.task == "regression" and config.loss_name == "mse" and config.monitor == ("val/mae", "min")


def test_all_errors_reported_at_once_with_field_value_and_expectation(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "task: classify\n"
        "data: {root: x, image_size: -3, colour: red}\n"
        "training: {epochs: ten, learning_rate: 0}\n"
        "model: {backbon: resnet18}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, ["data.batch_size=0"])
    message = str(info.value)
    assert str(path) in message
    expected = [
        ("task", "'classify'", "'classification' or 'regression'"),
        ("data.image_size", "-3", "greater than or equal to 16"),
        ("data.batch_size", "0", "greater than or equal to 1"),
        ("training.epochs", "'ten'", "integer"),
        ("training.learning_rate", "0", "greater than 0"),
    ]
    for field, value, expectation in expected:
        line = next((ln for ln in message.splitlines() if ln.strip().startswith(field + ":")), None)
        assert line is not None, f"{field} not reported:\n{message}"
        assert value in line and expectation in line, line
    assert "data.colour: unknown field; expected one of: root, manifest" in message
    assert "model.backbon: unknown field" in message and "backbone" in message


@pytest.mark.parametrize("overrides, fragment", [
    (["data.val_fraction=0.6", "data.test_fraction=0.5"], "data.val_fraction + data.test_fraction must be < 1"),
    (["training.loss=mse"], "training.loss=mse is a regression loss but task=classification"),
    (["data.augment.crop_scale=[0.9, 0.2]"], "data.augment.crop_scale: got [0.9, 0.2]; expected 0 < low <= high"),
    (["device=gpu"], "device: got 'gpu'; expected auto, cpu, cuda, cuda:N or mps"),
    (["experiment=../escape"], "experiment: got '../escape'"),
    (["training"], "must look like key.sub=value"),
    (["training.warmup_epochs=3", "training.epochs=2"], "training.warmup_epochs (3.0) must be < training.epochs (2)"),
    (["data.extensions=[jpg]"], "data.extensions: got ['jpg']; expected a non-empty list of extensions starting"),
    (["data.root.x=1"], "data.root is a value"),
    # a union field: one line naming the value given and every member's expectation, not "got '(default)'"
    (["data.num_workers=lots"], "data.num_workers: got 'lots'; expected a valid integer, unable to parse string "
                                "as an integer, or 'auto'"),
])
def test_specific_errors(tmp_path, overrides, fragment):
    path = tmp_path / "c.yaml"
    path.write_text("data: {root: leaves}\n")
    with pytest.raises(ConfigError, match=None) as info:
        load_config(path, overrides)
    assert fragment in str(info.value)


def test_missing_data_source_and_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="set data.root .* or data.manifest"):
        load_config(None, ["data.image_size=64"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(listy)


def test_yaml_bare_on_off_mean_the_words(tmp_path):
    # YAML 1.1 reads `off`/`on` as booleans; the user wrote the word, so the schema takes it as such.
    path = tmp_path / "c.yaml"
    path.write_text(f"data:\n  root: {tmp_path}\n  augment:\n    on_device: on\n"
                    "training:\n  mixed_precision: off\n  channels_last: on\n")
    config = load_config(path)
    assert config.data.augment.on_device == "on"
    assert load_config(path, ["data.augment.on_device=off"]).data.augment.on_device == "off"
    assert config.training.mixed_precision == "off"
    assert config.training.channels_last == "on"
    assert load_config(path, ["training.channels_last=off"]).training.channels_last == "off"
    with pytest.raises(ConfigError, match=r"training.mixed_precision: got True"):
        load_config(path, ["training.mixed_precision=on"])


def test_threads_setting(tmp_path):
    import torch

    from plantpheno.device import set_threads, usable_cores

    path = tmp_path / "c.yaml"
    path.write_text(f"data:\n  root: {tmp_path}\n")
    assert load_config(path).training.threads == "auto"
    assert load_config(path, ["training.threads=3"]).training.threads == 3
    with pytest.raises(ConfigError, match="training.threads"):
        load_config(path, ["training.threads=0"])
    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1 and torch.get_num_threads() == 1
        assert set_threads("auto") == usable_cores() == torch.get_num_threads()
        assert set_threads("auto", processes_per_machine=4 * usable_cores()) == 1  # never below one
    finally:
        torch.set_num_threads(before)


def test_container_cpu_quota_is_read(tmp_path):
    from plantpheno.device import _cgroup_cpu_quota

    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert _cgroup_cpu_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert _cgroup_cpu_quota(tmp_path) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("200000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert _cgroup_cpu_quota(v1) == 2.0
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert _cgroup_cpu_quota(v1) is None


@pytest.mark.parametrize(("cores", "local_world", "expected"), [(2, 1, 1), (16, 1, 8), (64, 1, 8), (16, 2, 4),
                                                                 (1, 1, 0), (4, 4, 0)])
def test_auto_workers_take_half_of_each_process_share_of_usable_cores(monkeypatch, cores, local_world, expected):
    import plantpheno.device
    from plantpheno.data.datasets import resolve_num_workers

    monkeypatch.setattr(plantpheno.device, "usable_cores", lambda: cores)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local_world))
    assert resolve_num_workers("auto") == expected
    assert resolve_num_workers(3) == 3  # a number is taken as given


@pytest.mark.parametrize(("task", "monitor", "direction"), [
    ("classification", "auto", ("val/macro_f1", "max")), ("classification", "val/loss", ("val/loss", "min")),
    ("classification", "val/accuracy", ("val/accuracy", "max")), ("regression", "auto", ("val/mae", "min")),
    ("regression", "val/r2", ("val/r2", "max")), ("regression", "val/rmse", ("val/rmse", "min"))])
def test_monitor_resolves_from_the_task(tmp_path, task, monitor, direction):
    path = tmp_path / "c.yaml"
    path.write_text("data: {root: leaves}\n")
    assert load_config(path, [f"task={task}", f"training.monitor={monitor}"]).monitor == direction


@pytest.mark.parametrize(("task", "monitor"), [("classification", "val/mae"), ("regression", "val/macro_f1"),
                                               ("classification", "train/loss"), ("classification", "val/acc")])
def test_a_monitor_the_task_does_not_compute_fails_when_the_config_loads(tmp_path, task, monitor):
    path = tmp_path / "c.yaml"
    path.write_text("data: {root: leaves}\n")
    with pytest.raises(ConfigError, match=rf"training.monitor: got '{monitor}'; expected auto or one of val/loss"):
        load_config(path, [f"task={task}", f"training.monitor={monitor}"])
