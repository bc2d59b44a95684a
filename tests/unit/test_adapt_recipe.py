"""The classify_adapt recipe (fine-tuning a classify model on a few labelled images from another source) loads and
validates with a parent to start from, and runs started from a parent do not share a frozen pass with runs that
start from the bundled weights."""

from __future__ import annotations

import pytest
import torch

import plantpheno as pp
from plantpheno.errors import ConfigError
from plantpheno.training.feature_store import FeatureStore
from plantpheno.training.phases import FrozenFeatures


def test_classify_adapt_starts_from_a_parent_and_fine_tunes_the_last_blocks_gently():
    adapt = pp.load_config("classify_adapt", {"model.init_from": "runs/classify/lab", "data.manifest": "a.csv"})
    lab = pp.load_config("classify")
    assert adapt.model.init_from == "runs/classify/lab"
    # the parent's backbone and input size: init_from refuses another backbone, and the features must match
    assert (adapt.model.backbone, adapt.data.image_size) == (lab.model.backbone, lab.data.image_size)
    assert adapt.model.freeze_backbone and adapt.training.feature_cache
    # chosen on 10 field validation images a class (benchmarks/adapt.py --field-val 10, 3 seeds): head then blocks
    assert adapt.training.fine_tune.epochs > 0 and adapt.training.fine_tune.blocks == lab.training.fine_tune.blocks
    # measured (benchmarks/adapt.py): 0.002 wrecked the blocks on a few dozen images; the lab rate did not
    assert adapt.training.fine_tune.learning_rate <= lab.training.fine_tune.learning_rate
    assert adapt.evaluation.split == "test"


def test_classify_adapt_is_validated_like_any_config():
    with pytest.raises(ConfigError, match="training.fine_tune.learning_rate"):
        pp.load_config("classify_adapt", {"training.fine_tune.learning_rate": -1})
    with pytest.raises(ConfigError, match="model.init_from"):
        pp.load_config("classify_adapt", {"model.init_from": ""})


def test_a_run_started_from_a_parent_keys_its_frozen_pass_apart():
    """The parent's weights replace the pretrained ones: a shared feature store must not serve the bundled
    backbone's features to a run started from a fine-tuned parent (or one parent's to another's)."""
    def key(init_from: str | None) -> object:
        config = pp.load_config("classify_adapt", {"model.init_from": init_from} if init_from else {})
        if init_from is None:
            config = config.model_copy(update={"model": config.model.model_copy(update={"init_from": None})})
        features = FrozenFeatures(None, None, None, config, mean=(0.5,) * 3, std=(0.5,) * 3,  # type: ignore[arg-type]
                                  device=torch.device("cpu"), reporter=None, store=FeatureStore())
        return features._store_key("cut 5")

    assert key("runs/a") != key(None)
    assert key("runs/a") != key("runs/b")
    assert key("runs/a") == key("runs/a")


def test_train_classify_adapt_without_overrides_names_init_from_first_and_the_manifest_too(tmp_path, monkeypatch,
                                                                                              capsys):
    """The recipe's placeholder parent (runs/classify/RUN) is the first thing to set: one line names it and the
    missing adapt.csv, exit status 2, before any data is read or run folder made."""
    from plantpheno.cli import main as cli

    monkeypatch.chdir(tmp_path)
    assert cli(["train", "classify_adapt"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.index("model.init_from runs/classify/RUN does not exist") < err.index("data.manifest adapt.csv")
    assert not (tmp_path / "runs").exists()
    (tmp_path / "adapt.csv").write_text("path,label,split\n")
    assert cli(["train", "classify_adapt"]) == 2  # the manifest is there: only the parent is named
    err = capsys.readouterr().err
    assert "model.init_from runs/classify/RUN" in err and "data.manifest" not in err
