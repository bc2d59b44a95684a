"""What the report and the cards say, from recorded values: data findings in brief beside the verdict (a
trait's border shortcut as R²), phase marks from the recorded phases, task-aware card lines."""

from __future__ import annotations

from types import SimpleNamespace

from plantpheno.evaluation import report_sections as sections
from plantpheno.evaluation.card_text import input_text, limits, output_text
from plantpheno.evaluation.html_report import fine_tune_start
from plantpheno.records.evaluation import Evaluation
from plantpheno.records.model_meta import ModelMeta

TRAIT_SHORTCUT = {"severity": "warning", "check": "background_shortcut", "count": 1, "fix": "...",
                  "message": "The image border alone predicts the label: a ridge regression ... R² = 0.68 ...",
                  "details": {"r2": 0.6812, "baseline_r2": 0.0, "p_value": 0.005}}
CLASS_SHORTCUT = {"severity": "warning", "check": "background_shortcut", "count": 1, "fix": "...", "message": "...",
                  "details": {"accuracy": 0.666, "chance": 1 / 3, "majority": 0.34}}
INFO = {"severity": "info", "check": "label_errors", "count": 0, "fix": "nothing to do.", "message": "none"}
IMBALANCE = {"severity": "warning", "check": "labels.imbalance", "count": 1, "fix": "...",
             "message": "class rust has 5x fewer images than healthy. More words.", "details": {}}


def _metrics(task: str, verdict: str | None) -> Evaluation:
    m = {"task": task, "headline_metric": "mae" if task == "regression" else "accuracy", "mae": 1.2,
         "accuracy": 0.9, "split": "test", "num_images": 30, "checkpoint_epoch": 3}
    if verdict:
        m["baseline"] = {"kind": "training mean", "value": 5.0,
                         "verdict": {"verdict": verdict, "text": "beats the baseline", "metric": "mae",
                                     "baseline": 2.0}}
    return Evaluation.from_dict(m)


CONFIG = SimpleNamespace(model=SimpleNamespace(backbone="test_resnet", pretrained=False))


def test_every_warning_is_briefed_with_its_figure_and_notes_are_left_out():
    assert sections.data_warnings({"findings": [TRAIT_SHORTCUT, INFO, IMBALANCE, CLASS_SHORTCUT]}) == [
        "the image border alone explains R² = 0.68 of the trait (predicting the mean: 0)",
        "labels.imbalance: class rust has 5x fewer images than healthy",
        "the image border alone predicts 66.6% of labels (chance 33.3%)"]
    assert sections.data_warnings(None) == [] and sections.data_warnings({"findings": [INFO]}) == []


def test_the_warnings_stand_beside_the_verdict_or_in_their_own_row():
    warnings = sections.data_warnings({"findings": [TRAIT_SHORTCUT]})
    better = sections.summary(_metrics("regression", "better"), config=CONFIG, dataset={}, warnings=warnings)
    assert ("<th>Verdict</th><td>better: beats the baseline, but the image border alone explains R² = 0.68 of the "
            "trait") in better
    worse = sections.summary(_metrics("regression", "worse"), config=CONFIG, dataset={}, warnings=warnings)
    assert "worse: beats the baseline, and the image border alone" in worse
    alone = sections.summary(_metrics("regression", None), config=CONFIG, dataset={}, warnings=warnings)
    assert "<th>Data warnings</th><td>the image border alone explains R² = 0.68" in alone
    quiet = sections.summary(_metrics("regression", "better"), config=CONFIG, dataset={})
    assert "but" not in quiet and "Data warnings" not in quiet


def test_the_fine_tune_mark_is_where_the_recorded_phase_changed():
    history = [{"epoch": 1, "phase": "train"}, {"epoch": 2, "phase": "train"}, {"epoch": 3, "phase": "fine_tune"},
               {"epoch": 4, "phase": "fine_tune"}]
    assert fine_tune_start(history) == 2
    assert fine_tune_start(history[:2]) is None
    assert fine_tune_start([{"epoch": 1}, {"epoch": 2}]) is None  # a log that never recorded its phases


def test_card_lines_are_task_aware_and_say_how_the_image_was_made():
    model = {"backbone": "test_resnet", "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    trait = ModelMeta.model_validate({**model, "task": "regression", "num_outputs": 1, "target_mean": 7.5,
                                      "target_std": 2.0, "counts": True, "image_size": 224, "resize": "pad",
                                      "tta": "none"})
    leaf = ModelMeta.model_validate({**model, "task": "classification", "num_outputs": 2, "class_names": ["a", "b"],
                                     "temperature": 1.5, "image_size": 224, "resize": "crop", "tta": "flips"})
    assert "softmax" not in output_text(trait) and "temperature" not in output_text(trait)
    assert "training mean 7.5, std 2" in output_text(trait) and "rounded" in output_text(trait)
    assert "softmax of the logits / 1.5" in output_text(leaf) and "flips" in output_text(leaf)
    assert not any("Classes" in line for line in limits(trait)) and any("Classes" in line for line in limits(leaf))
    assert "letterboxed into a 224 px square" in input_text(trait) and "centre-cropped" in input_text(leaf)
    assert "stretched to 224 x 224" in input_text(leaf.model_copy(update={"resize": "stretch"}))
