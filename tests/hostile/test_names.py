"""File names an attacker (or a camera, a Windows share, a careless script) makes, through train, evaluate, resume and
predict in new interpreters (harms 2 and 3 of issue 16): carriage returns, newlines, commas, quotes, spaces and
bytes that are not UTF-8, in image and class folder names. Every CSV must read back the very names on disk."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from cli_harness import plantpheno

pytestmark = pytest.mark.slow

ODD_FILES = [b"cr\rname.jpg", b"new\nline.jpg", b'comma, and "quote".jpg', b"lat\xe9n-1.jpg", b"  lead and trail .jpg",
             b"tab\there.jpg", b"\xff\xfe.jpg"]
ODD_CLASSES = [b"mehlt\xe4u", b"leaf, spot"]  # a Latin-1 class folder name, and one with a comma


def _odd_dataset(root: Path, source: Path) -> set[str]:
    """A copy of ``source`` with odd names added; returns every image path as the filesystem names it."""
    shutil.copytree(source, root)
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    donors = sorted(classes[0].iterdir())
    for i, name in enumerate(ODD_FILES):
        shutil.copy(donors[i], os.path.join(os.fsencode(classes[i % len(classes)]), name))
    for name in ODD_CLASSES:
        folder = os.path.join(os.fsencode(root), name)
        os.mkdir(folder)
        for donor in sorted(classes[1].iterdir())[:8]:
            shutil.copy(donor, os.path.join(folder, os.fsencode(donor.name)))
    bad = os.path.join(os.fsencode(classes[0]), b"broken\xff\r.jpg")  # a bad image with an odd name: skipped
    with open(bad, "wb") as fh:
        fh.write(b"not an image")
    return {os.fsdecode(os.path.join(folder, name)) for folder, _, names in os.walk(os.fsencode(root))
            for name in names if name.endswith(b".jpg") and os.path.join(folder, name) != bad}


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8", errors="surrogateescape") as fh:
        return list(csv.DictReader(fh))


def _ok(result) -> None:
    assert "Traceback" not in result.stderr, result.stderr[-4000:]
    assert result.returncode == 0, result.stderr[-4000:]


def test_odd_file_names_round_trip_through_train_evaluate_resume_and_predict(tmp_path, disease_root):
    images = _odd_dataset(tmp_path / "leaves", disease_root)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "seed": 0, "device": "cpu", "output_dir": str(tmp_path / "runs"), "run_name": "odd",
        "data": {"root": str(tmp_path / "leaves"), "image_size": 32, "batch_size": 8, "num_workers": 0,
                 "on_bad_image": "skip",
                 # the set copies pictures into several class folders: the checks call that an error; here they
                 # only have to name every file
                 "checks": {"on_error": "warn"}},
        "model": {"backbone": "test_resnet"}, "training": {"epochs": 1, "progress_bar": False},
        "evaluation": {"bootstrap_samples": 50}, "tracking": {"system_metrics_interval": 0}}))
    run = tmp_path / "runs" / "default" / "odd"

    trained = plantpheno("train", str(config))
    _ok(trained)
    # the report and the data checks show every name too (escaped), they do not give up on one
    assert (run / "report.html").is_file() and "rebuild it with" not in trained.stderr, trained.stderr[-3000:]
    assert (run / "data_check.json").is_file()
    split = _read(run / "split.csv")
    assert {row["path"] for row in split} == images  # every odd name, exactly, once
    assert {row["label"] for row in split} >= {os.fsdecode(c) for c in ODD_CLASSES}
    skipped = _read(run / "bad_images.csv")
    assert [os.fsencode(row["path"]).rsplit(b"/", 1)[1] for row in skipped] == [b"broken\xff\r.jpg"]
    test_rows = _read(run / "eval" / "test" / "predictions.csv")
    assert {row["path"] for row in test_rows} == {row["path"] for row in split if row["split"] == "test"}
    assert json.loads((run / "dataset.json").read_text())["skipped_bad_images"] == 1

    _ok(plantpheno("evaluate", str(run), "--split", "val"))
    val_rows = _read(run / "eval" / "val" / "predictions.csv")
    assert {row["path"] for row in val_rows} == {row["path"] for row in split if row["split"] == "val"}

    _ok(plantpheno("train", "--resume", str(run)))  # reads split.csv back and checks the fingerprint
    assert json.loads((run / "run.json").read_text())["status"] == "completed"

    out = tmp_path / "preds.csv"
    _ok(plantpheno("predict", str(run), str(tmp_path / "leaves"), "--out", str(out)))
    assert {row["path"] for row in _read(out)} == images
    skipped_by_predict = _read(out.with_name("preds.skipped.csv"))
    assert [os.fsencode(row["path"]).rsplit(b"/", 1)[1] for row in skipped_by_predict] == [b"broken\xff\r.jpg"]

    import subprocess
    import sys

    raw = subprocess.run([sys.executable, "-m", "plantpheno", "predict", str(run), str(tmp_path / "leaves")],
                         capture_output=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert raw.returncode == 0 and b"Traceback" not in raw.stderr, raw.stderr[-3000:]
    stdout_rows = list(csv.DictReader(io.StringIO(raw.stdout.decode("utf-8", "surrogateescape"), newline="")))
    assert {row["path"] for row in stdout_rows} == images  # standard output carries the names' own bytes
