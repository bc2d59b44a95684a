"""A run folder and a model package written before model metadata and evaluations became typed records
(tests/data/old_layout/, made by its make_fixture.py with that code) still load and predict the same."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

OLD = Path(__file__).resolve().parents[1] / "data" / "old_layout"
EXPECTED = json.loads((OLD / "expected.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("source", ["run", "package"])
def test_old_run_and_package_predict_as_they_did(source: str, tmp_path: Path):
    from plantpheno.api import load_model

    folder = shutil.copytree(OLD / source, tmp_path / source)  # predicting from a run packages it: never in place
    images = sorted(str(p) for p in (OLD / "images").iterdir())
    with load_model(str(folder)) as model:
        got = model.predict(images)
    expected = EXPECTED[source]
    assert [Path(p.source).name for p in got] == [e["image"] for e in expected]
    assert [p.label for p in got] == [e["label"] for e in expected]
    for prediction, recorded in zip(got, expected):
        assert prediction.probabilities == pytest.approx(recorded["probabilities"], abs=1e-6)
