"""Progress when the console is not a terminal, the evaluation summary, and the trivial-baseline warning."""

from __future__ import annotations

import io

import numpy as np
import pytest

from plantpheno.reporting import ConsoleReporter, LineProgress, RecordingReporter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_line_progress_writes_a_line_per_interval_with_counts_rate_and_eta(monkeypatch):
    clock = Clock()
    monkeypatch.setattr("plantpheno.reporting.time.monotonic", clock)
    lines: list[str] = []
    bar = LineProgress(lines.append, total=100, desc="checking images", unit="img", interval=10)
    for _ in range(10):  # 10 images in 5 s: nothing yet
        clock.now += 0.5
        bar.update(1)
    assert lines == []
    for _ in range(20):  # 20 more in the next 10 s: one line, at 10 s
        clock.now += 0.5
        bar.update(1)
    assert lines == ["checking images: 20/100 img (20%), 2 img/s, ETA 0:40"]
    bar.set_postfix(loss="0.12", refresh=False)
    clock.now += 20
    bar.update(70)
    assert lines[-1] == "checking images: 100/100 img (100%), 2.86 img/s, ETA 0:00, loss=0.12"
    bar.close()
    assert lines[-1] == "checking images: 100/100 img in 0:35 (loss=0.12)"


def test_short_work_writes_nothing_and_unknown_totals_have_no_eta(monkeypatch):
    clock = Clock()
    monkeypatch.setattr("plantpheno.reporting.time.monotonic", clock)
    lines: list[str] = []
    quick = LineProgress(lines.append, total=5, desc="quick", interval=10)
    quick.update(5)
    quick.close()
    assert lines == []
    open_ended = LineProgress(lines.append, total=None, desc="reading", unit="file", interval=1)
    clock.now += 2
    open_ended.update(4)
    assert lines == ["reading: 4 file, 2 file/s"]


def test_console_reporter_gives_lines_off_a_terminal_and_can_be_quiet():
    stream = io.StringIO()  # not a terminal
    bar = ConsoleReporter(stream, line_interval=0).progress(total=2, desc="backbone pass (train)", unit="img")
    assert isinstance(bar, LineProgress)
    bar.update(2)
    bar.close()
    assert stream.getvalue().startswith("backbone pass (train): 2/2 img (100%)")
    quiet = ConsoleReporter(io.StringIO(), progress_bars=False).progress(total=2, desc="x")
    assert not isinstance(quiet, LineProgress)


def test_image_check_shows_progress_for_the_files_it_decodes(tmp_path):
    from PIL import Image

    from plantpheno.data.images import check_images

    paths = []
    for i in range(5):
        Image.new("RGB", (8, 8), (i, i, i)).save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    reporter = RecordingReporter()
    check_images(paths, memo=tmp_path / "memo.json", reporter=reporter)
    assert reporter.progress_calls == [["checking images", 5, "img", 5]]
    again = RecordingReporter()
    check_images(paths, memo=tmp_path / "memo.json", reporter=again)  # all remembered: nothing to decode
    assert again.progress_calls == []


def test_summary_lists_every_headline_figure_and_the_baseline(tmp_path):
    from plantpheno.evaluation.baselines import regression_baseline
    from plantpheno.evaluation.report import summary_lines, write_evaluation
    from plantpheno.run.folder import EvalDir

    y = np.array([3, 4, 5, 6, 7, 8, 9, 10] * 4, dtype=float)
    pred = y + np.tile([0.2, -0.3, 0.6, -1.6], 8)
    m = write_evaluation(EvalDir(tmp_path / "eval"), targets=y, outputs=pred, paths=[tmp_path / f"{i}.png" for i in
                                                                                   range(len(y))],
                         class_names=None, bootstrap_samples=200, confidence=0.95, seed=0,
                         extra={"split": "test", "num_images": len(y),
                                "baseline": regression_baseline([6.0, 7.0], y, counts=True)})
    assert m.baseline.score("mae") == pytest.approx(np.abs(y - 6.5).mean())
    lines = summary_lines(m)
    assert lines[0].startswith(f"test (32 images): MAE {m.value('mae'):.4f} (95% CI ")
    assert "RMSE " in lines[0] and "R² " in lines[0]
    assert lines[1] == ("  counts: DiC -0.2500  |DiC| 0.7500  exact count 50.0%  count within one 75.0%")
    assert lines[2] == f"  baseline, always the training mean (6.5): MAE {m.baseline.score('mae'):.4f}"
    header = (tmp_path / "eval/predictions.csv").read_text().splitlines()[0]
    assert header == "path,value,predicted,predicted_count,error"
