"""Class maps (data/class_map.py), the shift figures (evaluation/shift.py), telling two sources apart
(data/doctor/sources_apart.py) and starting from a parent model's weights (training/init_from.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from plantpheno.data.class_map import ClassMap, load_class_map, map_source, parse_class_map
from plantpheno.data.sources import Sample
from plantpheno.errors import ArgumentError, ConfigError, DataError
from plantpheno.evaluation.shift import difference, shift_summary, worst_errors

CLASSES = ["blight", "healthy", "rust"]


def _samples(*labels: str) -> list[Sample]:
    return [Sample(Path(f"{label}_{i}.jpg"), label) for i, label in enumerate(labels)]


def test_many_to_one_map_with_unknown_and_null() -> None:
    cmap = parse_class_map({"Early blight": "blight", "Late blight": "blight", "ok": "healthy", "mosaic": "unknown",
                            "virus": None}, CLASSES)
    found = map_source(_samples("Early blight", "Late blight", "ok", "mosaic", "virus", "other"), cmap, CLASSES,
                       source="field")
    assert [(s.target, c) for s, c in found.mapped] == [("Early blight", 0), ("Late blight", 0), ("ok", 1)]
    assert [s.target for s in found.unmapped] == ["mosaic", "virus", "other"]  # unmapped labels: expected unknown
    assert found.labels["mosaic"] == 1 and found.unused_keys == ()


def test_without_a_map_labels_named_as_run_classes_map_to_themselves() -> None:
    found = map_source(_samples("rust", "healthy", "mosaic"), ClassMap(), CLASSES, source="field")
    assert [c for _, c in found.mapped] == [2, 1] and [s.target for s in found.unmapped] == ["mosaic"]


def test_map_entries_no_image_carries_are_reported() -> None:
    found = map_source(_samples("rust"), parse_class_map({"rust": "rust", "rusty": "rust"}, CLASSES), CLASSES,
                       source="field")
    assert found.unused_keys == ("rusty",)


def test_a_class_the_run_does_not_have_is_named_with_the_run_classes() -> None:
    with pytest.raises(DataError, match=r"'wilt' maps to 'wilting', which is not a class of the run .*"
                                        r"the run's classes: blight, healthy, rust"):
        parse_class_map({"rust": "rust", "wilt": "wilting"}, CLASSES, origin="map.yaml")


@pytest.mark.parametrize("raw, expected", [
    (["blight", "rust"], "is a list; expected a mapping 'source label: run class'"),
    ("rust", "is a str; expected a mapping"),
    (None, "is empty"),
    ({"rust": ["rust", "blight"]}, "'rust' maps to \\['rust', 'blight'\\] \\(a list\\)"),
    ({"rust": {"to": "rust"}}, "\\(a dict\\)"),
])
def test_a_map_in_the_wrong_shape_says_what_shape_is_expected(raw: object, expected: str) -> None:
    with pytest.raises(DataError, match=expected):
        parse_class_map(raw, CLASSES, origin="map.yaml")


def test_map_files_missing_or_not_yaml(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="class map .*nope.yaml does not exist"):
        load_class_map(tmp_path / "nope.yaml", CLASSES)
    bad = tmp_path / "bad.yaml"
    bad.write_text("rust: [unclosed\n")
    with pytest.raises(DataError, match="is not readable YAML"):
        load_class_map(bad, CLASSES)
    good = tmp_path / "good.yaml"
    good.write_text("Rust leaf: rust\n3: healthy\n")  # a numeric label is a label too
    assert load_class_map(good, CLASSES).mapping == {"Rust leaf": "rust", "3": "healthy"}


def test_a_source_with_no_mapped_image_is_refused() -> None:
    with pytest.raises(DataError, match=r"field has no image with a label of the run: its labels are mosaic \(2\), "
                                        r"virus \(1\); none is one of the run's classes; give a class map"):
        map_source(_samples("mosaic", "mosaic", "virus"), ClassMap(), CLASSES, source="field")
    with pytest.raises(DataError, match="the class map map.yaml maps none of them"):
        map_source(_samples("mosaic"), parse_class_map({"mosaic": None}, CLASSES, origin="map.yaml"), CLASSES,
                   source="field")


def test_source_names_must_be_plain_and_not_a_split() -> None:
    from plantpheno.source_eval import SourceSpec, source_name

    assert source_name(SourceSpec(Path("data/field_2024"))) == "field_2024"
    assert source_name(SourceSpec(Path("data/field.csv"))) == "field"
    for bad in ("test", "../x", "a b", ""):
        with pytest.raises(ArgumentError, match="not one of the run's splits"):
            source_name(SourceSpec(Path("field"), name=bad))


def test_difference_interval_covers_a_real_drop_and_excludes_zero() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    good = np.where(rng.random(400) < 0.95, y, (y + 1) % 3)  # 95 % right in source
    poor = np.where(rng.random(400) < 0.60, y, (y + 1) % 3)  # 60 % right on the other source
    acc = lambda t, p: float(np.mean(t == p))  # noqa: E731
    found = difference(acc, (y, good), (y, poor), n_resamples=300, confidence=0.95, seed=0)
    assert found["drop"] == pytest.approx(acc(y, good) - acc(y, poor))
    assert 0 < found["low"] < found["drop"] < found["high"] < 0.6
    same = difference(acc, (y, good), (y, good), n_resamples=300, confidence=0.95, seed=0)
    assert same["drop"] == 0 and same["low"] < 0 < same["high"]
    assert difference(acc, (y, good), (y, poor), n_resamples=0, confidence=0.95, seed=0)["low"] is None


def test_shift_summary_per_class_drops_and_calibration_after_temperature() -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(0, 1.5, (600, 3))
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = np.array([rng.choice(3, p=row) for row in p])  # softmax(z) is calibrated: labels drawn from it
    logits = 3.0 * z  # overconfident by a factor 3: a temperature of 3 undoes it
    test_y = rng.integers(0, 3, 200)
    fitted = 3.0
    found = shift_summary(source_logits=logits, source_targets=y, test_targets=test_y, test_predicted=test_y,
                          class_names=CLASSES, temperature=fitted, temperature_applied=True, bins=10,
                          bootstrap_samples=200, confidence=0.95, seed=0)
    assert found["drop"]["accuracy"]["in_source"] == 1.0 and found["drop"]["accuracy"]["drop"] > 0
    assert [r["class"] for r in found["per_class"]] == CLASSES and all(r["drop"] >= 0 for r in found["per_class"])
    cal = found["calibration"]
    assert cal["ece_after"]["estimate"] < cal["ece_before"]["estimate"]  # a higher temperature helps
    assert cal["ece_change"]["high"] < 0
    none = shift_summary(source_logits=logits, source_targets=y, test_targets=None, test_predicted=None,
                         class_names=CLASSES, temperature=1.0, temperature_applied=False, bins=10,
                         bootstrap_samples=0, confidence=0.95, seed=0)
    assert none["drop"] is None and none["calibration"]["ece_after"] is None


def test_worst_errors_are_the_most_confident_wrong_ones() -> None:
    logits = np.array([[5.0, 0, 0], [0, 9.0, 0], [0, 0, 1.0], [0, 3.0, 0]])
    found = worst_errors(["a", "b", "c", "d"], logits, np.array([0, 0, 2, 0]), CLASSES, temperature=1.0, limit=5)
    assert [e["path"] for e in found] == ["b", "d"] and found[0]["predicted"] == "healthy"


def test_border_classifier_tells_lab_from_field_but_not_lab_from_lab(tmp_path: Path) -> None:
    from plantpheno.data.doctor.sources_apart import sources_apart
    from plantpheno.data.synth import synthesize_disease

    lab = sorted(synthesize_disease(tmp_path / "lab", per_class=10, image_size=48, seed=0).rglob("*.jpg"))
    field = sorted(synthesize_disease(tmp_path / "field", per_class=10, image_size=48, seed=1,
                                      style="field").rglob("*.jpg"))
    apart = sources_apart(lab, field, permutations=49, seed=0)
    assert apart["images"] == [40, 40] and apart["accuracy"] > 0.85 and apart["p_value"] <= 0.05
    alike = sources_apart(lab[::2], lab[1::2], permutations=49, seed=0)
    assert alike["accuracy"] < 0.75
    assert sources_apart(lab[:5], field, seed=0)["accuracy"] is None  # too few to say


def test_parent_weights_are_copied_with_head_rows_matched_by_class_name() -> None:
    import timm
    import torch

    from plantpheno.records.model_meta import ModelMeta
    from plantpheno.training.init_from import check_parent, load_parent_weights

    def meta(task: str, backbone: str) -> ModelMeta:
        scaling = ({"class_names": CLASSES, "num_outputs": len(CLASSES)} if task == "classification"
                   else {"num_outputs": 1, "target_mean": 0.0, "target_std": 1.0})
        return ModelMeta(task=task, backbone=backbone, image_size=32, mean=(0.5,) * 3, std=(0.2,) * 3, **scaling)

    torch.manual_seed(0)
    parent = timm.create_model("test_resnet", num_classes=3)
    child = timm.create_model("test_resnet", num_classes=3)
    fresh = child.get_classifier().weight.detach().clone()
    record = load_parent_weights(child, parent.state_dict(), meta("classification", "test_resnet"),
                                 class_names=["rust", "mosaic", "blight"], origin="parent")
    assert record == {"classes_kept": ["rust", "blight"], "classes_new": ["mosaic"], "classes_dropped": ["healthy"]}
    w, pw = child.get_classifier().weight, parent.get_classifier().weight
    assert torch.equal(w[0], pw[2]) and torch.equal(w[2], pw[0]) and torch.equal(w[1], fresh[1])
    body = [k for k in parent.state_dict() if not k.startswith("fc.")]
    assert all(torch.equal(child.state_dict()[k], parent.state_dict()[k]) for k in body)
    with pytest.raises(ConfigError, match="it is a regression model and this config trains classification"):
        check_parent(meta("regression", "test_resnet"), task="classification",
                     backbone="test_resnet", origin="runs/x")
    with pytest.raises(ConfigError, match="its backbone is 'resnet18' and this config's model.backbone is 'test_resnet'"):
        check_parent(meta("classification", "resnet18"), task="classification",
                     backbone="test_resnet", origin="runs/x")


def test_evaluation_sources_are_checked_before_training_and_name_their_entry(make_config, tmp_path: Path) -> None:
    from plantpheno.source_eval import check_sources

    other = tmp_path / "other"
    for label in ("Rust", "mosaic"):
        (other / label).mkdir(parents=True)
        Image.new("RGB", (8, 8), (40, 120, 40)).save(other / label / "a.jpg")  # decoded by the check
    cmap = tmp_path / "map.yaml"
    cmap.write_text("Rust: rust\n")
    ok = make_config(data={"root": str(tmp_path)}, evaluation={"sources": [{"data": str(other), "class_map": str(cmap)}]})
    check_sources(ok, CLASSES)
    with pytest.raises(DataError, match=r"evaluation.sources\[0\]: .* none is one of the run's classes"):
        check_sources(make_config(data={"root": str(tmp_path)}, evaluation={"sources": [{"data": str(other)}]}),
                      CLASSES)
    with pytest.raises(DataError, match=r"evaluation.sources\[1\]: name 'val' .* set its name"):
        check_sources(make_config(data={"root": str(tmp_path)}, evaluation={"sources": [
            {"data": str(other), "class_map": str(cmap)}, {"data": str(other), "class_map": str(cmap),
                                                            "name": "val"}]}), CLASSES)
    with pytest.raises(DataError, match="needs a classification run"):
        check_sources(ok, None)
    (other / "Rust" / "b.jpg").write_bytes(b"")  # an unusable image fails before training, named
    with pytest.raises(DataError, match=r"(?s)evaluation.sources\[0\]: 1 of 3 image\(s\) .*Rust/b.jpg: empty file"):
        check_sources(ok, CLASSES)
