"""A newcomer's first run, end to end, and the one end-to-end test in `make test`: synthetic leaves -> train ->
evaluate -> report -> register -> predict, each step through the command line as a user types it.

The commands run in this process (``plantpheno.cli.main``): starting new interpreters, signals and kills have their
own end-to-end tests in `make test-all`. Everything else is real: the model trains, MLflow's registry is a sqlite
file, and the registered model's predictions must equal the evaluation's own predictions of the same images.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from plantpheno.cli import main


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as fh:
        return {row["path"]: row for row in csv.DictReader(fh)}


def test_a_first_run_trains_evaluates_reports_registers_and_predicts(tmp_path, capsys):
    leaves = tmp_path / "leaves"
    assert main(["data", "synth", str(leaves), "--per-class", "24", "--image-size", "64", "--seed", "0"]) == 0
    # the quick start's recipe (`classify`: bundled ImageNet weights, cached features, a head, a short fine-tune),
    # shrunk: 64 px, 30 head epochs and 1 fine-tune epoch; the data checks and the bootstrap interval stay on; the
    # report comes from `plantpheno report` below rather than from train, so that command is the one exercised. The
    # model must clearly beat its trivial baseline on test, or registering it would need --force (0.71 against 0.21
    # on 14 test images when this was written).
    config = ["classify", f"data.root={leaves}", "data.image_size=64", "training.epochs=30",
              "training.fine_tune.epochs=1", "training.progress_bar=false", "evaluation.report=false",
              f"output_dir={tmp_path / 'runs'}", "run_name=run"]

    # 1. train: the test score with its interval and the baseline it has to beat, then where the run is
    assert main(["train", *config]) == 0
    out = capsys.readouterr().out
    run_dir = Path(out.split("run directory: ")[1].strip())
    assert re.search(r"accuracy \d\.\d+ \(95% CI \d\.\d+ to \d\.\d+\)", out), out  # a number with its interval
    assert "baseline, always the most frequent training class" in out and "macro-F1 " in out
    assert (run_dir / "checkpoints" / "best.pt").is_file() and (run_dir / "data_check.json").is_file()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"
    assert not (run_dir / "report.html").exists()

    # 2. evaluate another split
    assert main(["evaluate", str(run_dir), "--split", "val"]) == 0
    val = json.loads((run_dir / "eval" / "val" / "metrics.json").read_text())
    assert val["split"] == "val" and 0 <= val["accuracy"] <= 1

    # 3. report: one self-contained page
    assert main(["report", str(run_dir)]) == 0
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    for section in ("summary", "card", "curves", "per-class", "confusion", "gallery"):
        assert f'id="{section}"' in html, section
    assert "<script" not in html and re.findall(r'(?:src|href)="(?!data:|#)', html) == []

    # 4. register in a sqlite MLflow registry
    uri = f"sqlite:///{tmp_path / 'registry.db'}"
    capsys.readouterr()
    assert main(["models", "register", str(run_dir), "--name", "leafnet", "--alias", "champion",
                 "--registry", uri]) == 0
    assert "registered leafnet version 1" in capsys.readouterr().out

    # 5. predict the test images with the registered model: the same classes and probabilities as evaluation
    expected = _rows(run_dir / "eval" / "test" / "predictions.csv")
    out_csv = tmp_path / "predictions.csv"
    assert main(["predict", "leafnet@champion", *expected, "--registry", uri, "--out", str(out_csv)]) == 0
    got = _rows(out_csv)
    assert got.keys() == expected.keys() and len(got) >= 4
    for path, row in expected.items():
        assert got[path]["predicted"] == row["predicted"], path
        for key in (k for k in row if k.startswith("p_")):
            assert float(got[path][key]) == pytest.approx(float(row[key]), abs=2e-6), (path, key)
