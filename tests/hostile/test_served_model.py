"""The served model reads only what it is sent (issue 27): a registered version served by MLflow takes a ``path``
column only inside the folder it was started with (model_config ``allowed_image_dir``), never followed out through
``..`` or a link, never a FIFO, and says the same about a missing file as about a forbidden one. Every decoded
image (bytes, arrays, PIL images, paths) is held to training's pixel limit, in the pyfunc model, the Python API
and ``plantpheno predict``. In-process through ``mlflow.pyfunc`` (what the server calls), and one real
``mlflow models serve``."""

from __future__ import annotations

import base64
import os
import shutil
import sys
import threading

import numpy as np
import pandas as pd
import pytest
from cli_harness import huge_png, in_process
from conftest import mlflow_served, post_json
from PIL import Image
from tiny_model import tiny_model  # noqa: F401 (a fixture)

pytestmark = pytest.mark.slow

BOMB_SIDE = 11_000  # 121 M pixels, above the 100 M limit: a ~30 KB PNG that decodes to 363 MB


@pytest.fixture(scope="module")
def world(tiny_model, tmp_path_factory):
    """An allowed folder with one good image and traps (a link out, a FIFO), and a secret file outside it."""
    tmp = tmp_path_factory.mktemp("served")
    allowed = tmp / "allowed"
    (allowed / "sub").mkdir(parents=True)
    shutil.copyfile(tiny_model.images[0], allowed / "sub" / "leaf.jpg")
    secret = tmp / "secret.jpg"
    shutil.copyfile(tiny_model.images[1], secret)  # a real image: decoding it would succeed
    (allowed / "link.jpg").symlink_to(secret)
    (allowed / "dirlink").symlink_to(tmp, target_is_directory=True)
    os.mkfifo(allowed / "pipe.jpg")
    os.mkfifo(tmp / "outside-pipe.jpg")
    huge_png(tmp / "bomb.png", BOMB_SIDE, BOMB_SIDE)
    return tmp, allowed, secret


def _load(tiny_model, **config):
    import mlflow

    return mlflow.pyfunc.load_model(str(tiny_model.pyfunc), model_config=config or None)


def _refusal(model, frame: pd.DataFrame, timeout: float = 60) -> str:
    """The message of the 400 the request gets; it must come within ``timeout`` (a FIFO opened would block)."""
    from mlflow.exceptions import MlflowException

    outcome: dict[str, object] = {}

    def call() -> None:
        try:
            outcome["result"] = model.predict(frame)
        except MlflowException as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(timeout)
    assert not worker.is_alive(), "the request hangs (a FIFO was opened?)"
    assert "error" in outcome, f"accepted: {outcome.get('result')}"
    error = outcome["error"]
    assert error.error_code == "INVALID_PARAMETER_VALUE"  # the server answers it with HTTP 400
    return error.message


class _Opened:
    """Every file this process opens while it is active (Python's ``open`` audit event)."""

    active: _Opened | None = None
    hooked = False

    def __init__(self) -> None:
        self.paths: list[str] = []
        if not _Opened.hooked:
            sys.addaudithook(lambda event, args: _Opened.active and event == "open" and isinstance(args[0], str)
                             and _Opened.active.paths.append(args[0]))
            _Opened.hooked = True

    def __enter__(self) -> _Opened:
        _Opened.active = self
        return self

    def __exit__(self, *exc: object) -> None:
        _Opened.active = None


def test_path_input_refused_without_an_allow_list_and_nothing_read(tiny_model, world):
    tmp, _, secret = world
    model = _load(tiny_model)
    with _Opened() as opened:
        message = _refusal(model, pd.DataFrame({"path": [str(secret)]}))
        assert "allowed_image_dir" in message and "'image' column" in message
        _refusal(model, pd.DataFrame({"path": [str(tmp / "outside-pipe.jpg")]}))  # a FIFO: would hang if opened
    assert not [p for p in opened.paths if "secret" in p or "pipe" in p], opened.paths
    # images sent as bytes still work
    out = model.predict(pd.DataFrame({"image": [tiny_model.images[0].read_bytes()]}))
    assert len(out) == 1 and out["confidence"][0] > 0


def test_allow_list_reads_inside_and_refuses_outside_links_dotdot_fifo_alike(tiny_model, world):
    tmp, allowed, secret = world
    model = _load(tiny_model, allowed_image_dir=str(allowed))
    inside = model.predict(pd.DataFrame({"path": ["sub/leaf.jpg", str(allowed / "sub" / "leaf.jpg"),
                                                  "sub/../sub/leaf.jpg"]}))
    sent = model.predict(pd.DataFrame({"image": [(allowed / "sub" / "leaf.jpg").read_bytes()]}))
    assert list(inside["predicted"]) == [sent["predicted"][0]] * 3
    hostile = {"absolute": str(secret), "dotdot": "../secret.jpg", "dotdot inside": "sub/../../secret.jpg",
               "link": "link.jpg", "folder link": "dirlink/secret.jpg", "fifo": "pipe.jpg",
               "missing": "nothing-here.jpg", "missing outside": str(tmp / "nothing-here.jpg"),
               "system file": "/etc/passwd", "folder": "sub", "nul": "a\x00b.jpg"}
    messages = {}
    for case, path in hostile.items():
        message = _refusal(model, pd.DataFrame({"path": [path]}))
        messages[case] = message.replace(repr(path), "PATH")
        assert "1 of 1 image(s) could not be read: row 0" in message, (case, message)
    # one refusal for all: a client cannot tell a missing file from a forbidden or existing one
    assert len(set(messages.values())) == 1, messages
    assert "inside the folder this model serves images from" in messages["missing"]


def test_bad_model_config_is_refused_at_load(tiny_model, tmp_path):
    """(A key the model was not saved with is dropped by MLflow itself, with its own warning naming it.)"""
    from plantpheno.errors import ModelError

    for config, fragment in (({"allowed_image_dir": str(tmp_path / "none")}, "allowed_image_dir"),
                             ({"max_rows": 0}, "max_rows"), ({"max_image_pixels": "many"}, "max_image_pixels"),
                             ({"allowed_image_dir": 7}, "allowed_image_dir")):
        with pytest.raises(ModelError, match=fragment):
            _load(tiny_model, **config)


def test_pixel_bomb_bytes_refused_before_decoding_everywhere(tiny_model, world):
    import plantpheno as pp
    from plantpheno.errors import DataError

    tmp, _, _ = world
    bomb = (tmp / "bomb.png").read_bytes()
    assert len(bomb) < 100_000
    message = _refusal(_load(tiny_model), pd.DataFrame({"image": [bomb]}))
    assert "image too large: 11000 x 11000" in message
    with pp.load_model(tiny_model.package) as model:
        for item in (bomb, tmp / "bomb.png"):
            with pytest.raises(DataError, match="image too large: 11000 x 11000"):
                model.predict(item)
        with pytest.raises(DataError, match="image too large"):
            model.predict(np.zeros((BOMB_SIDE, BOMB_SIDE), dtype=np.uint8))
        with pytest.raises(DataError, match="image too large"):
            model.predict(Image.new("1", (BOMB_SIDE, BOMB_SIDE)))
    code, _, err = in_process("predict", str(tiny_model.package), str(tmp / "bomb.png"), "--out",
                              str(tmp / "bomb.csv"))
    assert code == 0 and "skipped 1 unreadable file(s)" in err and "image too large" in err, err


def test_non_finite_arrays_are_refused(tiny_model):
    import plantpheno as pp
    from plantpheno.errors import DataError

    with pp.load_model(tiny_model.package) as model:
        for fill in (np.nan, np.inf):
            with pytest.raises(DataError, match="NaN or infinite"):
                model.predict(np.full((32, 32, 3), fill, dtype=np.float32))
        partly = np.full((32, 32, 3), 0.5, dtype=np.float32)
        partly[3, 4, 1] = np.nan
        with pytest.raises(DataError, match="1 NaN or infinite value"):
            model.predict(partly)


def test_request_row_limit(tiny_model):
    one = tiny_model.images[0].read_bytes()
    message = _refusal(_load(tiny_model, max_rows=4), pd.DataFrame({"image": [one] * 5}))
    assert "5 images in one request; at most 4" in message


# ----------------------------------------------------------------------------------------------
# the real server
# ----------------------------------------------------------------------------------------------




def test_mlflow_models_serve_refuses_paths_without_an_allow_list(tiny_model, world, tmp_path):
    """`mlflow models serve` as a deployment runs it: HTTP 400 for any path, the same for a FIFO (answered at
    once: it was not opened), a secret file and a missing one; image bytes still answered."""
    tmp, _, secret = world
    with mlflow_served(str(tiny_model.pyfunc), tmp_path / "serve.log", env={"SERVING_MODEL_CONFIG": None}) as base:
        answers = set()
        for path in (str(tmp / "outside-pipe.jpg"), str(secret), str(tmp / "missing.jpg"), "/etc/passwd"):
            request = {"dataframe_split": {"columns": ["path"], "data": [[path]]}}
            status, body = post_json(f"{base}/invocations", request)
            assert status == 400, body
            # MLflow's message starts with the request's data; what the model said follows it
            assert "'path' inputs are refused" in body["message"], body
            answers.add(body["message"][body["message"].index("'path' inputs are refused"):])
        assert len(answers) == 1 and "allowed_image_dir" in answers.pop()
        image = base64.b64encode(tiny_model.images[0].read_bytes()).decode("ascii")
        status, body = post_json(f"{base}/invocations", {"dataframe_records": [{"image": image}]})
        assert status == 200 and body["predictions"][0]["confidence"] > 0, body


def test_fifo_given_to_predict_is_refused_without_opening_it(tiny_model, world):
    """The API and ``plantpheno predict`` refuse a FIFO path at once (opening it would wait for a writer)."""
    import plantpheno as pp
    from plantpheno.errors import DataError

    tmp, _, _ = world
    fifo = tmp / "outside-pipe.jpg"
    outcome: dict[str, object] = {}

    def both() -> None:
        with pp.load_model(tiny_model.package) as model, pytest.raises(DataError) as caught:
            model.predict(fifo)
        outcome["api"] = str(caught.value)
        outcome["cli"] = in_process("predict", str(tiny_model.package), str(fifo), "--out", str(tmp / "fifo.csv"))

    worker = threading.Thread(target=both, daemon=True)
    worker.start()
    worker.join(120)
    assert not worker.is_alive(), "predict hangs on a FIFO"
    assert "is a FIFO (named pipe), not an image file" in outcome["api"]
    code, _, err = outcome["cli"]
    assert code == 0 and "skipped 1 unreadable file(s)" in err and "is a FIFO (named pipe)" in err, err
