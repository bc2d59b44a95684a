"""The trainer reads the loss back from the device every ``training.check_every`` steps (issue 20).

A GPU must not wait for the host at every step; these runs check on the CPU that deferring the reads changes
nothing but when they happen: same weights and metrics, NaN reported at the batch where it appeared, a stop
request still stops at once, and a resumed run still equals the uninterrupted one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from plantpheno import pipeline
from plantpheno.config import validate_config
from plantpheno.device import GPU_CHECK_EVERY, check_every
from plantpheno.errors import ConfigError, TrainingError
from plantpheno.training.loop import Interrupted

VOLATILE = ("time/", "lr_")
# 44 training images, batch 8, ragged tail dropped -> 5 steps per epoch
SECTIONS = {"training": {"epochs": 2, "warmup_epochs": 0.5, "learning_rate": 0.003},
            "model": {"backbone": "test_resnet", "dropout": 0.2}}


def _data(root: Path) -> dict:
    return {"root": str(root), "batch_size": 8}


def _log(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith(VOLATILE)} for r in rows]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


class BatchCalls:
    """Records, at each on_batch_end, the loss it was given and how many steps the trainer had taken then."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, int]] = []

    def on_batch_end(self, trainer, loss, images) -> None:
        self.calls.append((loss, trainer.state.global_step))


def test_reading_the_loss_every_few_steps_changes_nothing_but_when(make_config, disease_root):
    every_step, deferred = BatchCalls(), BatchCalls()
    a = pipeline.train(make_config(run_name="a", data=_data(disease_root), **SECTIONS), callbacks=[every_step])
    b = pipeline.train(make_config(run_name="b", data=_data(disease_root),
                                   training={**SECTIONS["training"], "check_every": 3}, model=SECTIONS["model"]),
                       callbacks=[deferred])
    wa, wb = _weights(a.run_dir / "checkpoints/last.pt"), _weights(b.run_dir / "checkpoints/last.pt")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert _log(a.run_dir) == _log(b.run_dir)  # running train loss and accuracy included
    assert [loss for loss, _ in every_step.calls] == [loss for loss, _ in deferred.calls]
    # every step is read at once on the CPU default; with 3, in groups at steps 3, 5 (epoch end), 8, 10
    assert [step for _, step in every_step.calls] == list(range(1, 11))
    assert [step for _, step in deferred.calls] == [3, 3, 3, 5, 5, 8, 8, 8, 10, 10]


class PoisonWeights:
    """Sets one weight to NaN when a given step's loss is read, so later losses are NaN."""

    def __init__(self, step: int) -> None:
        self.step, self.seen = step, 0

    def on_batch_end(self, trainer, loss, images) -> None:
        self.seen += 1
        if self.seen == self.step:
            with torch.no_grad():
                weight = next(trainer.model.parameters())
                weight[(0,) * weight.dim()] = float("nan")


def test_a_nan_found_at_a_later_check_names_the_batch_where_it_appeared(make_config, disease_root):
    # step 6's loss is read at the first check of epoch 2 (after its third step, global step 8) and poisons the
    # weights: steps 9 and 10 (epoch 2, batches 4 and 5) are NaN, found at the epoch's end (step 10)
    config = make_config(data=_data(disease_root), training={**SECTIONS["training"], "epochs": 3, "check_every": 3},
                         model=SECTIONS["model"])
    with pytest.raises(TrainingError, match=r"training loss became nan at epoch 2, batch 4\b.*last good checkpoint"):
        pipeline.train(config, callbacks=[PoisonWeights(6)])
    last = torch.load(config.output_dir / "default/run/checkpoints/last.pt", weights_only=True)
    assert last["state"]["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in last["model"].values() if t.is_floating_point())


class StopAtRead:
    """Asks the trainer to stop, as SIGINT would, when the n-th step's loss is read."""

    def __init__(self, n: int) -> None:
        self.n, self.seen = n, 0

    def on_batch_end(self, trainer, loss, images) -> None:
        self.seen += 1
        if self.seen == self.n:
            trainer.stop_requested = "SIGINT"


def test_a_stop_request_read_at_a_check_stops_there_and_resumes_exactly(make_config, disease_root):
    sections = {"data": _data(disease_root), "training": {**SECTIONS["training"], "epochs": 3, "check_every": 4},
                "model": SECTIONS["model"]}
    straight = pipeline.train(make_config(**sections))
    config = make_config(run_name="stopped", **sections)
    with pytest.raises(Interrupted) as stopped:
        pipeline.train(config, callbacks=[StopAtRead(6)])
    # checks at steps 4, 5 (epoch end), 9: step 6's loss is read at step 9, and the run stops right there
    assert stopped.value.state.global_step == 9
    resumed = pipeline.resume(config.output_dir / "default" / "stopped")
    for name in ("best.pt", "last.pt"):
        a, b = _weights(straight.run_dir / "checkpoints" / name), _weights(resumed.run_dir / "checkpoints" / name)
        assert all(torch.equal(a[k], b[k]) for k in a), f"{name} differs after resume"
    assert _log(straight.run_dir) == _log(resumed.run_dir)


def test_check_every_resolves_per_device_and_rejects_zero(make_config, disease_root):
    assert check_every("auto", torch.device("cpu")) == 1
    assert check_every("auto", torch.device("cuda")) == GPU_CHECK_EVERY
    assert check_every(5, torch.device("cpu")) == 5
    with pytest.raises(ConfigError, match=r"training.check_every: got 0; expected a positive number of steps"):
        make_config(data=_data(disease_root), training={"check_every": 0})
    assert validate_config  # the schema entry point the fixture uses
