"""One file per band end to end (issue 31): RGB TIFFs with a NIR TIFF beside each -> train with the band cache and
the feature cache -> evaluate again from split.csv -> predict a folder (the pattern finds the NIR files)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from plantpheno import pipeline
from plantpheno.config import validate_config
from conftest import tiny_config

pytestmark = pytest.mark.slow
BY_PATTERN = ["red", "green", "blue", {"name": "nir", "pattern": "{stem}_NIR.tif"}, "ndvi"]
BY_COLUMN = ["red", "green", "blue", {"name": "nir", "column": "nir_path"}, "ndvi"]


@pytest.fixture(scope="module")
def leaves(tmp_path_factory) -> Path:
    from plantpheno.data.synth_bands import synthesize_multispectral

    return synthesize_multispectral(tmp_path_factory.mktemp("pb") / "set", per_class=10, image_size=32, seed=4,
                                    layout="per-band")


def cached_run(tmp: Path, data: dict, *, feature_cache: bool = True, cache: str = "disk") -> Path:
    raw = tiny_config(tmp, data={**data, "cache": cache, "augment": {"enabled": False}},
                      model={"freeze_backbone": True, "pretrained": False}, training={"epochs": 2,
                                                                                      "feature_cache": feature_cache})
    return pipeline.train(validate_config(raw), handle_signals=False).run_dir


def test_per_band_files_train_with_caches_and_predict_a_folder(leaves, tmp_path) -> None:
    from plantpheno.api import load_model

    run = cached_run(tmp_path / "a", {"root": str(leaves), "bands": BY_PATTERN})
    assert (tmp_path / "a" / "runs" / ".cache").is_dir()  # the band cache was written
    plain = cached_run(tmp_path / "b", {"root": str(leaves), "bands": BY_PATTERN}, feature_cache=False, cache="none")
    out = tmp_path / "pred.csv"
    done = subprocess.run([sys.executable, "-m", "plantpheno", "predict", str(run), str(leaves / "stressed"),
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 10 and not any(r["path"].endswith("_NIR.tif") for r in rows)  # NIR files are bands
    with load_model(run) as cached_model, load_model(plain) as plain_model:
        files = sorted((leaves / "healthy").glob("healthy_000?.tif"))
        got, want = cached_model.predict(files), plain_model.predict(files)
        assert [p.probabilities for p in got] == [p.probabilities for p in want]  # the caches change nothing


def test_manifest_band_columns_survive_in_split_csv_for_evaluation(leaves, tmp_path) -> None:
    from plantpheno.api import load_model

    run = cached_run(tmp_path, {"manifest": str(leaves / "labels.csv"), "bands": BY_COLUMN}, cache="memory")
    header = (run / "split.csv").read_text().splitlines()[0]
    assert header == "path,label,split,group,nir_path"
    again = pipeline.evaluate_run(run)  # reads split.csv: the NIR column comes back with it
    assert again is not None
    image = leaves / "stressed" / "stressed_0003.tif"
    with load_model(run) as model:
        [one] = model.predict({"image": image, "nir": leaves / "stressed" / "stressed_0003_NIR.tif"})
        assert one.error is None and one.label in ("healthy", "stressed")
