"""Every Python API error is a PlantPhenoError naming the argument (issue 27): a bad split, device, input or
batch size once raised bare KeyError/TypeError/ValueError/RuntimeError, and ``predict("")`` scanned the whole
current folder."""

from __future__ import annotations

import pytest
from tiny_model import tiny_model  # noqa: F401 (a fixture)

import plantpheno as pp
from plantpheno.errors import ArgumentError, ConfigError, PlantPhenoError, RunDirError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model(tiny_model):
    with pp.load_model(tiny_model.package) as loaded:
        yield loaded


@pytest.mark.parametrize("images, fragment", [
    ("", "images: got an empty path ''"),
    ([], "images: got an empty list"),
    ((), "images: got an empty list"),
    ([""], "images: got an empty path ''"),
    (42, "images: got a int"),
    ({"a": 1}, "images: got a dict"),
])
def test_predict_refuses_empty_and_wrong_inputs(model, images, fragment, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # were "" read as the current folder, this one would be scanned
    with pytest.raises(ArgumentError) as caught:
        model.predict(images)
    assert fragment in str(caught.value)


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, "8", True, None, 10**9])
def test_predict_batch_size(model, tiny_model, batch_size):
    with pytest.raises(ArgumentError, match=r"batch_size: got .*; expected an integer from 1 to 65,536"):
        model.predict(tiny_model.images[0], batch_size=batch_size)


def test_predict_on_bad_image_names_the_argument(model, tiny_model):
    with pytest.raises(ArgumentError, match="on_bad_image: got 'ignore'"):
        model.predict(tiny_model.images[0], on_bad_image="ignore")


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "cuda:²", "", 3, None, "cpu\n"])
def test_load_model_device(tiny_model, device):
    with pytest.raises(ConfigError, match="device: got .*; expected auto, cpu, cuda, cuda:N or mps"):
        pp.load_model(tiny_model.package, device=device)


@pytest.mark.parametrize("ref", ["", None, 7])
def test_load_model_reference(ref):
    with pytest.raises(ArgumentError, match="ref: got"):
        pp.load_model(ref)


@pytest.mark.parametrize("split", ["validation", "", None, 1])
def test_split_is_named(tiny_model, split):
    run = pp.open_run(tiny_model.run)
    calls = [lambda: run.metrics(split)] if split != "validation" else []
    if split == "validation":  # Run.metrics also reads evaluations on another source by name: none has this one
        with pytest.raises(RunDirError, match=r"no evaluation named 'validation' .*the run has .*\btest\b"):
            run.metrics(split)
    if split is not None:  # pp.evaluate's split=None is its default (the test split, or data= another source)
        calls.append(lambda: pp.evaluate(run, split=split, verbose=False))
    for call in calls:
        with pytest.raises(ArgumentError, match=r"split: got .*; expected one of train, val, test"):
            call()


def test_argument_errors_are_plantpheno_errors_and_value_errors():
    # one except clause for every error a user can cause; code that caught the bare ValueError still does
    assert issubclass(ArgumentError, PlantPhenoError) and issubclass(ArgumentError, ValueError)
