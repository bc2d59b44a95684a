"""report.html end to end: the demo run's report in a real browser, Grad-CAM on planted lesions, calibration
and TTA carried into packages, predict and exports, the data-check section, and a trait model worse than its
baseline called out in the console and at the top of the report."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY_BACKBONE
from plantpheno import pipeline
from plantpheno.cli import main
from plantpheno.config import load_config
from plantpheno.data.images import load_rgb
from plantpheno.data.synth import disease_example, synthesize_disease
from plantpheno.evaluation.calibration import softmax
from plantpheno.evaluation.gradcam import grad_cam
from plantpheno.evaluation.tta import VIEWS, view
from plantpheno.reporting import RecordingReporter
from plantpheno.run.folder import RunDir
from plantpheno.training.checkpoint import save_checkpoint
from report_browser import assert_report_ok, open_in_browser

pytestmark = pytest.mark.slow

SECTIONS = ("summary", "card", "curves", "per-class", "confusion", "pairs", "gallery", "calibration", "tta")
DATA_CHECK = {"version": 1, "summary": {"errors": 1, "warnings": 1}, "findings": [
    {"severity": "error", "check": "duplicates", "message": "2 images are byte-identical across train and test",
     "count": 2, "fix": "drop one copy of each pair <or> regroup them", "files": [["a/x.jpg", "b/y.jpg"]]},
    {"severity": "warning", "check": "class_balance", "message": "class rust has 5x fewer images than healthy",
     "count": 1, "fix": "set data.class_balanced_sampling: true", "files": []},
]}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """`make demo`: the recipe demo on its synthetic leaves (60 per class, 96 px), 12 epochs (97 % val accuracy
    by epoch 9), with flip TTA."""
    root = tmp_path_factory.mktemp("demo")
    leaves = synthesize_disease(root / "leaves", per_class=60, image_size=96, seed=0)
    config = load_config("demo", [
        f"data.root={leaves}", f"output_dir={root / 'runs'}", "run_name=demo", "device=cpu", "training.epochs=12",
        "training.progress_bar=false", "evaluation.tta=flips", "evaluation.bootstrap_samples=300"])
    reporter = RecordingReporter()
    result = pipeline.train(config, reporter=reporter)
    return RunDir(result.run_dir), result.metrics, reporter


def test_demo_report_has_every_section_and_nothing_that_leaves_the_file(demo):
    run, metrics, reporter = demo
    html = run.report.read_text(encoding="utf-8")
    for anchor in SECTIONS:
        assert f'id="{anchor}"' in html, anchor
    assert "Content-Security-Policy" in html and "default-src 'none'" in html and "img-src data:" in html
    assert "<script" not in html
    assert re.findall(r'(?:src|href)="(?!data:|#)', html) == []  # every image inline, links only within the page
    assert run.report.stat().st_size < 2_000_000
    assert any(m.startswith("report: ") and str(run.report) in m for level, m in reporter.lines)
    # the numbers behind it
    stored = json.loads(run.temperature.read_text())
    assert metrics["calibration"]["before"]["ece"] >= 0 and stored["fitted_on"] == "val"
    if stored["applied"]:
        assert metrics["calibration"]["temperature"] == stored["temperature"] and metrics["calibration"]["after"]
    else:  # a perfectly separated validation split: no temperature, said in the console and the report
        assert stored["temperature"] == 1.0 and "not_applied" in metrics["calibration"]
        assert any("temperature scaling not applied" in m for level, m in reporter.lines if level == "warning")
        assert "Temperature scaling was not applied" in html
    assert metrics["baseline"]["kind"] == "majority class" and metrics["baseline"]["verdict"]["verdict"]
    assert set(metrics["tta"]) >= {"with", "without", "val"} and metrics["tta"]["views"] == list(VIEWS["flips"])
    assert len(re.findall(r'class="tile', html)) >= 4


def test_demo_report_passes_the_browser_check(demo, tmp_path):
    run, _metrics, _ = demo
    check = assert_report_ok(run.report, tmp_path / "report.png")
    assert "Worst errors" in check.text and "Calibration" in check.text
    assert len(check.images) >= 8  # curves, reliability diagram, thumbnails and their Grad-CAM overlays


def test_browser_check_catches_a_report_that_reaches_out(demo, tmp_path):
    """The check can fail: a page with an outside image and script is caught (CSP refusal or a counted request)."""
    run, _, _ = demo
    bad = tmp_path / "bad.html"
    bad.write_text(run.report.read_text(encoding="utf-8").replace(
        "<h1>", '<img src="http://127.0.0.1:9/x.png"><script src="https://cdn.example.org/x.js"></script><h1>', 1))
    check = open_in_browser(bad, tmp_path / "bad.png")
    assert check.requests or check.console_errors
    assert check.undecoded


def _model(run: RunDir):
    checkpoint = torch.load(run.best_checkpoint, weights_only=True)
    config = run.read_config()
    from plantpheno.models import build_model

    model = build_model(config.model, num_outputs=checkpoint["meta"]["num_outputs"])
    model.load_state_dict(checkpoint["model"])
    return model.eval(), checkpoint["meta"]


def test_grad_cam_weights_the_planted_lesions_more_than_the_background(demo):
    run, metrics, _ = demo
    model, meta = _model(run)
    mean, std = (torch.tensor(meta[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    rows = [line.split(",")[:3] for line in run.eval("test").predictions.read_text().splitlines()[1:]]
    lesion_w, background_w = [], []
    for path, label, predicted in rows:
        if label == "healthy" or label != predicted:
            continue
        index = int(re.search(r"_(\d+)\.jpg$", path).group(1))
        image, lesion, leaf = disease_example(label, index, image_size=96, seed=0)
        # as the model saw it: the demo config resizes to 64 px
        image, lesion, leaf = (np.asarray(Image.fromarray(a).resize((64, 64), Image.Resampling.BILINEAR), np.float32)
                               for a in (np.asarray(image), np.uint8(lesion * 255), np.uint8(leaf * 255)))
        lesion, leaf = lesion / 255, leaf / 255
        x = torch.from_numpy(image / 255).permute(2, 0, 1)[None]
        cam = grad_cam(model, (x - mean) / std, torch.tensor([metrics["class_names"].index(label)]))[0]
        lesion_w.append(cam[lesion > 0.5].mean())
        background_w.append(cam[leaf < 0.02].mean())
    assert len(lesion_w) >= 10, f"only {len(lesion_w)} diseased test leaves were classified correctly"
    lesion_w, background_w = np.array(lesion_w), np.array(background_w)
    assert lesion_w.mean() > 1.5 * background_w.mean(), (lesion_w.mean(), background_w.mean())
    assert (lesion_w > background_w).mean() > 0.5, list(zip(lesion_w, background_w))


def test_packages_predict_and_exports_apply_the_temperature_and_tta(demo, tmp_path):
    from plantpheno.registry.export import export_package
    from plantpheno.registry.package import package_run
    from plantpheno.registry.predict import Predictor

    run, _, _ = demo
    package = package_run(run.path, tmp_path / "pkg")
    temperature = json.loads(run.temperature.read_text())["temperature"]
    assert package.meta.temperature == pytest.approx(temperature) and package.meta.tta == "flips"
    paths = [run.path.parent.parent.parent / "leaves" / "rust" / f"rust_{i:04d}.jpg" for i in range(3)]
    results, bad = Predictor(package).predict_files(paths)
    assert not bad
    model, _ = _model(run)
    predictor = Predictor(package)
    batch = torch.stack([predictor.transform(load_rgb(p)) for p in paths])
    with torch.no_grad():
        logits = torch.stack([model(view(batch, v)) for v in VIEWS["flips"]]).mean(0).numpy()
    np.testing.assert_allclose(np.stack([r[1].numpy() for r in results]), softmax(logits, temperature), atol=1e-5)
    for fmt, name in (("torchscript", "model.pt"), ("onnx", "model.onnx")):
        report = export_package(package, fmt, tmp_path / name)
        assert report.max_abs_diff <= report.tolerance


def test_report_command_rebuilds_with_data_check_findings_and_evaluate_writes_one(demo, tmp_path, capsys):
    run_src, _, _ = demo
    run = RunDir(tmp_path / "copy")
    shutil.copytree(run_src.path, run.path)
    run.data_check.write_text(json.dumps(DATA_CHECK))
    run.report.unlink()
    assert main(["report", str(run.path)]) == 0
    assert str(run.report) in capsys.readouterr().out
    html = run.report.read_text(encoding="utf-8")
    assert 'id="data-check"' in html and "byte-identical across train and test" in html
    assert "drop one copy of each pair &lt;or&gt; regroup them" in html  # file text is escaped
    assert main(["report", str(run.path), "--split", "train"]) == 2
    assert "no evaluation of the train split" in capsys.readouterr().err
    metrics = pipeline.evaluate_run(run.path, split="val", device="cpu")
    assert metrics["split"] == "val" and "(val)</title>" in run.report_for("val").read_text(encoding="utf-8")
    assert "(test)</title>" in run.report.read_text(encoding="utf-8")  # the test report is still there


def test_a_trait_model_worse_than_its_baseline_is_called_out(rosette_manifest, make_config, tmp_path):
    config = make_config(task="regression", data={"manifest": str(rosette_manifest), "image_size": 32},
                         model={"backbone": TINY_BACKBONE}, training={"epochs": 1}, evaluation={"report": True})
    trained = pipeline.train(config, reporter=RecordingReporter())
    run = RunDir(trained.run_dir)
    html = run.report.read_text(encoding="utf-8")
    for text in ("Per true count", "within one", "Bland-Altman", "training mean", "DiC"):
        assert text in html, text
    base = trained.metrics["baseline"]
    assert base["kind"] == "training mean" and base["verdict"]["metric"] == "mae"
    # a broken model: its head adds 50 leaves to every prediction
    checkpoint = torch.load(run.best_checkpoint, weights_only=True)
    checkpoint["model"]["fc.bias"] += 50.0 / checkpoint["meta"]["target_std"]
    save_checkpoint(run.best_checkpoint, checkpoint)  # with its new checksum, as training writes it
    reporter = RecordingReporter()
    metrics = pipeline.evaluate_run(run.path, split="test", device="cpu", reporter=reporter)
    assert metrics["baseline"]["verdict"]["verdict"] == "worse"
    warnings = [m for level, m in reporter.lines if level == "warning"]
    assert any("does NOT beat the baseline" in m and "mae" in m for m in warnings), reporter.lines
    html = run.report.read_text(encoding="utf-8")
    body = html[html.index("<body>"):]
    assert body.index('class="alert"') < body.index('id="summary"')
    assert "does NOT beat its trivial baseline (training mean)" in body
