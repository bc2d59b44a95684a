"""The report shows what the model saw and says what matters first (issue 26): a ``data.resize: pad`` run's
gallery is letterboxed and its card says so, a planted border shortcut stands next to the verdict, suspected
label errors are thumbnails worded as the checker's disagreement, each evaluated split keeps its own report,
the phase marks come from the phases that ran, a trait model's cards say nothing about softmax, and the long
steps (evaluation, export) say what they do before they do it."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import tiny_config
from plantpheno import pipeline
from plantpheno.cli import main
from plantpheno.config import validate_config
from plantpheno.data.batch_augment import pad_fill
from plantpheno.reporting import RecordingReporter
from plantpheno.run.folder import RunDir

pytestmark = pytest.mark.slow

FRAMES = {"a": (200, 70, 60), "b": (60, 80, 200)}  # the border colour of each class: a planted shortcut


@pytest.fixture(scope="module")
def wide_root(tmp_path_factory) -> Path:
    """Two classes of wide (3:1) noisy images; class a has a light band in its middle, class b a dark one, and
    each class its own 3-pixel frame colour, so the border alone predicts the label."""
    root = tmp_path_factory.mktemp("wide")
    rng = np.random.default_rng(7)
    for label, level in (("a", 190), ("b", 60)):
        (root / label).mkdir()
        for i in range(16):
            image = rng.integers(100, 156, (32, 96, 3), dtype=np.uint8)
            image[10:22, 36:60] = level
            frame = np.clip(np.array(FRAMES[label]) + rng.integers(-10, 10, 3), 0, 255).astype(np.uint8)
            image[:3], image[-3:], image[:, :3], image[:, -3:] = frame, frame, frame, frame
            Image.fromarray(image).save(root / label / f"{label}{i}.png")
    return root


@pytest.fixture(scope="module")
def pad_run(tmp_path_factory, wide_root):
    """A tiny ``data.resize: pad`` run on the wide images (data-check errors as warnings: the noise images may
    look alike to a perceptual hash, which is not what these tests are about)."""
    tmp = tmp_path_factory.mktemp("runs")
    raw = tiny_config(tmp, run_name="pad", data={"root": str(wide_root), "resize": "pad", "image_size": 32,
                                                 "checks": {"on_error": "warn"}},
                      tracking={"system_metrics_interval": 0}, training={"epochs": 2, "progress_bar": False},
                      evaluation={"report": True})
    reporter = RecordingReporter()
    result = pipeline.train(validate_config(raw), reporter=reporter)
    return RunDir(result.run_dir), reporter


@pytest.fixture(scope="module")
def trait_run(tmp_path_factory, rosette_manifest):
    """A leaf-count run whose head phase early stopping ends after epoch 2 of 6, then one fine-tune epoch."""
    tmp = tmp_path_factory.mktemp("runs")
    raw = tiny_config(tmp, run_name="trait", task="regression",
                      data={"manifest": str(rosette_manifest), "augment": {"enabled": False}},
                      model={"freeze_backbone": True}, tracking={"system_metrics_interval": 0},
                      training={"epochs": 6, "progress_bar": False, "early_stopping": {"patience": 1, "min_delta": 1e9},
                                "fine_tune": {"epochs": 1, "blocks": 1}},
                      evaluation={"report": True})
    return RunDir(pipeline.train(validate_config(raw)).run_dir)


def _section(html: str, anchor: str) -> str:
    match = re.search(rf'<section id="{anchor}">(.*?)</section>', html, re.S)
    assert match, anchor
    return match.group(1)


def _gallery_images(html: str) -> list[np.ndarray]:
    """The example images of the report's gallery (not their Grad-CAM overlays), decoded."""
    found = re.findall(r'<img src="data:image/jpeg;base64,([^"]+)" alt="(?!Grad-CAM)[^"]*"', _section(html, "gallery"))
    return [np.asarray(Image.open(io.BytesIO(base64.b64decode(b))).convert("RGB"), dtype=np.float64) for b in found]


def test_a_pad_run_report_shows_the_letterboxed_square_the_model_saw(pad_run):
    run, _ = pad_run
    html = run.report.read_text(encoding="utf-8")
    images = _gallery_images(html)
    assert len(images) >= 2
    fill = np.array(pad_fill(_mean(run)))
    for pixels in images:
        assert pixels.shape[0] == pixels.shape[1]
        # a 3:1 image letterboxed into 32 px: about 11 rows of content in the middle, the letterbox above and below
        for bar in (pixels[:7], pixels[-7:]):
            assert np.abs(bar.reshape(-1, 3).mean(axis=0) - fill).max() < 8, bar.reshape(-1, 3).mean(axis=0)
            assert bar.std() < 8
        middle = pixels[13:19]
        assert np.abs(middle.reshape(-1, 3).mean(axis=0) - fill).max() > 10 or middle.std() > 15
    card = _section(html, "card")
    assert "letterboxed" in card and "data.resize: pad" in card and "centre" not in card


def _mean(run: RunDir) -> list[float]:
    import torch

    return torch.load(run.best_checkpoint, map_location="cpu", weights_only=False)["meta"]["mean"]


def test_the_border_shortcut_stands_next_to_the_verdict(pad_run):
    run, _ = pad_run
    check = json.loads(run.data_check.read_text())
    shortcut = next(f for f in check["findings"] if f["check"] == "background_shortcut")
    assert shortcut["severity"] == "warning", shortcut["message"]
    summary = _section(run.report.read_text(encoding="utf-8"), "summary")
    verdict = re.search(r"<th>Verdict</th><td>(.*?)</td>", summary).group(1)
    accuracy, chance = shortcut["details"]["accuracy"], shortcut["details"]["chance"]
    joint = "but" if json.loads(run.eval("test").metrics.read_text())["baseline"]["verdict"]["verdict"] == "better" \
        else "and"
    brief = f"the image border alone predicts {accuracy:.1%} of labels (chance {chance:.1%})"
    assert f", {joint} {brief}" in verdict, verdict


def test_evaluating_val_writes_its_own_report_and_keeps_the_test_report(pad_run, tmp_path, capsys):
    run, _ = pad_run
    copy = RunDir(shutil.copytree(run.path, tmp_path / "runs" / "pad"))
    before = copy.report.read_bytes()
    capsys.readouterr()
    assert main(["evaluate", str(copy.path), "--split", "val"]) == 0
    err = capsys.readouterr().err
    assert copy.report.read_bytes() == before
    val = copy.path / "report_val.html"
    assert val.is_file() and "(val)</title>" in val.read_text(encoding="utf-8")
    assert (copy.path / "eval/val/metrics.json").is_file() and (copy.path / "eval/test/metrics.json").is_file()
    # the evaluation says what it does before it does it, and the report where it goes
    assert re.search(r"^evaluating the val split \(\d+ images\): predictions", err, re.M), err
    assert "writing the val split's report (report_val.html)" in err
    assert copy.report_for("val") == val and copy.report_for("test") == copy.report


def test_the_final_evaluation_announces_itself_and_counts_its_batches(pad_run):
    _, reporter = pad_run
    messages = [m for _, m in reporter.lines]
    start = next(i for i, m in enumerate(messages) if m.startswith("evaluating the test split ("))
    assert "bootstrap intervals (200 resamples)" in messages[start]
    assert any(desc == "predicting test" and done == total and total > 0
               for desc, total, _unit, done in reporter.progress_calls), reporter.progress_calls


def test_export_says_what_it_does(pad_run, tmp_path, capsys):
    run, _ = pad_run
    assert main(["models", "export", str(run.path), str(tmp_path / "model.pt"), "--format", "torchscript"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"^exporting test_resnet to TorchScript \(tracing\), then checking it against", err, re.M), err
    assert "checking the TorchScript file against the PyTorch model" in err


def test_suspected_label_errors_are_thumbnails_worded_as_disagreement(pad_run, tmp_path):
    from plantpheno.data.doctor.catalog import Entry
    from plantpheno.data.doctor.findings import DataCheckReport
    from plantpheno.data.doctor.label_errors import label_error_findings

    run, _ = pad_run
    copy = RunDir(shutil.copytree(run.path, tmp_path / "runs" / "pad"))
    files = sorted(Path(copy.read_config().data.root).rglob("*.png"))
    rng = np.random.default_rng(0)
    truth = np.array([0 if f.parent.name == "a" else 1 for f in files])
    features = np.eye(2)[truth] * 4 + rng.normal(0, 0.3, (len(files), 2))
    given = [("b" if t == 0 else "a") if i in (0, len(files) - 1) else ("a", "b")[t] for i, t in enumerate(truth)]
    entries = [Entry(i, f, g, "train", None, None) for i, (f, g) in enumerate(zip(files, given))]
    findings, _ = label_error_findings(entries, features, [str(f) for f in files], folds=4, seed=0)
    finding = next(f for f in findings if f.severity == "warning")
    assert {str(files[0]), str(files[-1])} <= {g[0] for g in finding.files}
    assert all("the checker gives the given label" in n[0] and "p = " not in n[0] for n in finding.file_notes)
    DataCheckReport(findings, len(files)).write(copy.data_check)
    html = pipeline.report_run(copy.path).read_text(encoding="utf-8")
    grid = _section(html, "label-errors")
    thumbs = re.findall(r'<figure class="tile label"><img src="data:image/jpeg;base64,', grid)
    assert len(thumbs) == len(finding.files)
    details = finding.details
    for given_label, suggested, p_given in zip(details["given"], details["suggested"], details["given_probability"]):
        assert f"given: {given_label}" in grid and f"suggested: {suggested}" in grid
        assert f"the checker gives the given label {p_given:.0%}" in grid
    assert "p = " not in grid
    verdict = re.search(r"<th>Verdict</th><td>(.*?)</td>", _section(html, "summary")).group(1)
    assert f"{len(finding.files)} image(s) look mislabelled" in verdict


def test_phase_marks_come_from_the_phases_that_ran(trait_run):
    log = [json.loads(line) for line in trait_run.metrics_log.read_text().splitlines()]
    assert [(r["epoch"], r["phase"]) for r in log] == [(1, "train"), (2, "train"), (3, "fine_tune")]
    curves = _section(trait_run.report.read_text(encoding="utf-8"), "curves")
    assert "the fine-tune phase starts after epoch 2" in curves and "after epoch 6" not in curves


def test_a_trait_models_cards_say_only_what_applies_to_a_trait(trait_run, tmp_path):
    from plantpheno.registry.package import package_run

    card = _section(trait_run.report.read_text(encoding="utf-8"), "card")
    markdown = (package_run(trait_run.path, tmp_path / "pkg").folder / "MODEL_CARD.md").read_text(encoding="utf-8")
    for text in (card, markdown):
        assert "softmax" not in text.lower() and "temperature" not in text and "Classes not in" not in text
        assert "the trait value in the units of the training targets" in text
        assert "centre-cropped" in text  # this run crops (the default), and its cards say so
