"""A model package's description (``plantpheno_model.json``) and weights are untrusted input (issue 27): each
tampered field is one clear error naming it and what was expected, through the Python API and ``plantpheno
predict`` (no traceback); a truncated weights file likewise; packages written before newer fields still load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cli_harness import assert_refused, in_process
from tiny_model import tiny_model  # noqa: F401 (a fixture)

pytestmark = pytest.mark.slow

META = "plantpheno_model.json"


@pytest.fixture
def package(tiny_model, tmp_path) -> Path:
    """A copy of the tiny model's package, to tamper with."""
    return Path(shutil.copytree(tiny_model.package, tmp_path / "package"))


def _write(path: Path, content: bytes) -> None:
    """Replace a package file and record its new SHA-256 beside it, as a careful hand edit would: the checksum (its
    own tests: test_integrity.py) passes, so what is tested here is the schema's check of the content."""
    from plantpheno.files.atomic import checksum_file, file_sha256

    path.write_bytes(content)
    checksum_file(path).write_text(f"{file_sha256(path)}  {path.name}\n")


def _edit(package: Path, change) -> None:
    meta = json.loads((package / META).read_text())
    change(meta)
    _write(package / META, json.dumps(meta).encode())


def _refused(package: Path, *fragments: str) -> None:
    import plantpheno as pp
    from plantpheno.errors import PlantPhenoError

    with pytest.raises(PlantPhenoError) as caught:
        pp.load_model(package)
    for fragment in fragments:
        assert fragment in str(caught.value), str(caught.value)
    code, _, err = in_process("predict", str(package), str(package / "MODEL_CARD.md"))
    assert_refused(code, err, *fragments)


def _set(key, value):
    return lambda meta: meta.__setitem__(key, value)


CASES = {
    "missing backbone": (lambda meta: meta.pop("backbone"), ("backbone: Field required",)),
    "wrong backbone": (_set("backbone", "no_such_net"), ("backbone 'no_such_net' is not a timm model",)),
    "backbone not text": (_set("backbone", 7), ("backbone: Input should be a valid string",)),
    "class names short": (lambda meta: meta["class_names"].pop(),
                          ("class_names: got 3 for a head of num_outputs = 4",)),
    "class names missing": (_set("class_names", None), ("class_names: got none",)),
    "unknown task": (_set("task", "segmentation"), ("task: Input should be 'classification' or 'regression'",)),
    "tta bogus": (_set("tta", "bogus"), ("tta: Input should be 'none', 'flips' or 'd4'",)),
    "temperature hot": (_set("temperature", "hot"), ("temperature: Input should be a valid number (got 'hot')",)),
    "temperature negative": (_set("temperature", -1.5), ("temperature: got -1.5; expected a finite number > 0",)),
    "temperature zero": (_set("temperature", 0), ("temperature: got 0",)),
    "temperature bool": (_set("temperature", True), ("temperature:",)),
    "image size text": (_set("image_size", "32"), ("image_size: Input should be a valid integer",)),
    "std zero": (_set("std", [0, 1, 1]), ("std: got [0.0, 1.0, 1.0]; expected three values > 0",)),
    "resize bogus": (_set("resize", "zoom"), ("resize: Input should be 'crop', 'pad' or 'stretch'",)),
    "meta_version from the future": (_set("meta_version", 99), ("meta_version 99; this plantpheno reads versions 1 "
                                                               "to 2",)),
    "bands not RGB": (_set("bands", "RGBN"), ("bands: Input should be 'RGB' or a data.bands block",)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_tampered_field_is_named(package, case):
    change, fragments = CASES[case]
    _edit(package, change)
    _refused(package, *fragments)


def test_nan_temperature(package):
    text = (package / META).read_text()
    meta = json.loads(text)
    meta["temperature"] = float("nan")
    _write(package / META, json.dumps(meta).encode())  # Python writes the non-standard NaN literal
    _refused(package, "temperature: Input should be a finite number")


@pytest.mark.parametrize("content, fragment", [(b"{not json", "is not valid JSON"),
                                               (b"[1, 2, 3]", "holds a JSON list; expected an object"),
                                               (b"\xff\xfe garbage", "is not valid JSON"),
                                               (b"[" * 100_000, "")])
def test_description_not_an_object(package, content, fragment):
    _write(package / META, content)
    _refused(package, META, fragment)


def test_truncated_weights(package):
    weights = package / "model.safetensors"
    data = weights.read_bytes()
    for cut in (len(data) // 2, 5):
        _write(weights, data[:cut])
        _refused(package, "model.safetensors cannot be read as safetensors weights", "truncated or damaged")


def test_package_from_before_the_newer_fields_still_loads(package, tiny_model):
    import plantpheno as pp

    def strip(meta):
        for key in ("resize", "temperature", "tta", "counts", "timm_version"):
            meta.pop(key, None)

    _edit(package, strip)
    with pp.load_model(package) as model:
        assert model.predict(tiny_model.images[0])[0].label in model.class_names
