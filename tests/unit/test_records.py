"""The typed records read what earlier versions wrote (one migration, by meta_version), write it back unchanged,
refuse what a newer version wrote, and cannot be changed once made."""

from __future__ import annotations

import json
from pathlib import Path

import pydantic
import pytest
import torch

from plantpheno.errors import RegistryError, RunDirError
from plantpheno.records.evaluation import Evaluation, read_evaluation
from plantpheno.records.model_meta import META_VERSION, ModelMeta, migrate_meta, read_meta

OLD = Path(__file__).resolve().parents[1] / "data" / "old_layout"
FORMAT = "plantpheno-model/1"


def test_a_package_description_from_before_the_record_migrates_to_the_current_version():
    raw = json.loads((OLD / "package" / "plantpheno_model.json").read_text())
    assert "meta_version" not in raw and "bands" not in raw  # written before the record: version 1
    meta = read_meta(OLD / "package" / "plantpheno_model.json", expected_format=FORMAT)
    assert meta.meta_version == META_VERSION == 2 and meta.bands == "RGB"
    assert meta.class_names == raw["class_names"] and meta.image_size == raw["image_size"]
    assert meta.baseline_verdict is not None and meta.baseline_verdict.verdict == raw["baseline_verdict"]["verdict"]
    written = meta.to_dict()
    assert written == {**raw, "meta_version": 2, "bands": "RGB"}  # nothing else changes on the way through


def test_a_checkpoint_from_before_the_record_reads_its_metadata():
    checkpoint = torch.load(OLD / "run" / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)
    meta = ModelMeta.from_checkpoint(checkpoint, source="best.pt")
    assert meta.task == "classification" and meta.num_outputs == 4 and meta.resize == "crop"
    assert meta.temperature is None and meta.applied_temperature == 1.0 and meta.applied_tta == "none"


def test_the_migration_fills_what_version_1_left_out_and_refuses_a_newer_version():
    old = {"task": "regression", "num_outputs": 1, "target_mean": 3.0, "target_std": 1.0}
    assert migrate_meta(old, source="x") == {**old, "meta_version": 2, "bands": "RGB", "resize": "crop"}
    with pytest.raises(RunDirError, match=r"best\.pt: meta_version 3; this plantpheno reads versions 1 to 2"):
        ModelMeta.from_checkpoint({"meta": {**old, "meta_version": 3}}, source="best.pt")
    with pytest.raises(RegistryError, match="meta_version 'two'"):
        migrate_meta({**old, "meta_version": "two"}, source="x")
    with pytest.raises(RunDirError, match="holds no model metadata"):
        ModelMeta.from_checkpoint({"model": {}}, source="best.pt")


def test_an_evaluation_from_before_the_record_reads_and_writes_back_unchanged():
    path = OLD / "run" / "eval" / "test" / "metrics.json"
    ev = read_evaluation(path)
    assert ev.headline_metric == "accuracy" and ev.headline == 0.0 and ev.interval is not None
    assert ev.verdict is not None and not ev.verdict.is_better and ev.baseline.majority_class is not None
    assert ev.calibration.before.ece is not None and ev.per_class.support == [1, 1, 1, 1]
    assert json.loads(ev.to_json()) == json.loads(path.read_text())


def test_records_are_frozen_and_name_the_field_that_is_wrong():
    ev = read_evaluation(OLD / "run" / "eval" / "test" / "metrics.json")
    with pytest.raises(pydantic.ValidationError):
        ev.split = "val"
    with pytest.raises(RunDirError, match="headline_metric"):
        Evaluation.from_dict({"task": "classification"}, source="metrics.json")
    with pytest.raises(RunDirError, match="does not exist"):
        read_evaluation(OLD / "no" / "metrics.json")
