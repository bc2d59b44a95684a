"""Outputs that destroyed what they replaced (issue 27): ``predict --out`` onto a symbolic link or a FIFO replaced
it with a file, as root ``--out /dev/full`` replaced the device node, ``--out`` naming one of the input images
overwrote it. Every user-given output path now refuses a link, a FIFO, a device, a folder or one of the inputs,
saying why, before any work; the atomic-write helper never replaces anything but a regular file."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
from cli_harness import assert_refused, in_process

from plantpheno.files.atomic import atomic_write_bytes, atomic_write_text
from plantpheno.errors import StorageError

TINY = {"seed": 0, "device": "cpu", "model": {"backbone": "test_resnet"},
        "data": {"image_size": 32, "batch_size": 8, "num_workers": 0},
        "training": {"epochs": 1, "progress_bar": False},
        "evaluation": {"bootstrap_samples": 20, "report": False}, "tracking": {"system_metrics_interval": 0}}


@pytest.fixture(scope="module")
def world(tmp_path_factory, disease_root) -> dict[str, Path]:
    from plantpheno import pipeline
    from plantpheno.config import validate_config

    tmp = tmp_path_factory.mktemp("outputs")
    images = tmp / "images"
    shutil.copytree(disease_root, images)
    raw = json.loads(json.dumps(TINY))
    raw.update(output_dir=str(tmp / "trained"), run_name="run")
    raw["data"]["root"] = str(images)
    run = pipeline.train(validate_config(raw)).run_dir
    return {"tmp": tmp, "run": run, "images": images, "image": sorted(images.rglob("*.jpg"))[0]}


def _predict(world, out: Path | str, *inputs: Path) -> tuple[int, str, str]:
    return in_process("predict", str(world["run"]), *(str(p) for p in (inputs or (world["image"],))),
                      "--out", str(out))


def test_predict_out_onto_a_symlink_is_refused_and_the_link_and_its_target_stay(world, tmp_path):
    target = tmp_path / "precious.csv"
    target.write_text("keep me\n")
    link = tmp_path / "preds.csv"
    link.symlink_to(target)
    code, _, err = _predict(world, link)
    assert_refused(code, err, "--out", "is a symbolic link", "nothing was written")
    assert link.is_symlink() and target.read_text() == "keep me\n"


def test_predict_out_onto_a_fifo_is_refused_without_blocking(world, tmp_path):
    fifo = tmp_path / "preds.csv"
    os.mkfifo(fifo)
    code, _, err = _predict(world, fifo)
    assert_refused(code, err, "is a FIFO")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_predict_out_onto_a_device_is_refused_and_the_node_stays(world, tmp_path):
    # as root, --out /dev/full replaced the device node with a CSV file; a private node (the null device's
    # numbers) keeps the machine's own /dev safe should this ever run against code without the check
    device = tmp_path / "full"
    try:
        os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except (PermissionError, OSError):
        pytest.skip("cannot create a device node here (needs root)")
    code, _, err = _predict(world, device)
    assert_refused(code, err, f"{device} is a device")
    assert stat.S_ISCHR(os.lstat(device).st_mode)


def test_predict_out_onto_a_folder_is_refused(world, tmp_path):
    code, _, err = _predict(world, tmp_path)
    assert_refused(code, err, "is a folder")


def test_predict_out_naming_one_of_its_input_images_is_refused_and_the_image_stays(world):
    image = world["image"]
    before = image.read_bytes()
    code, _, err = _predict(world, image, world["images"])  # the image is inside the folder being predicted
    assert_refused(code, err, "is one of the inputs", str(image))
    assert image.read_bytes() == before


def test_predict_out_to_a_regular_file_still_works(world, tmp_path):
    out = tmp_path / "preds.csv"
    out.write_text("old\n")
    code, _, err = _predict(world, out)
    assert code == 0, err
    assert out.read_text().startswith("path,")


def test_export_refuses_a_symlink_and_a_file_of_the_model_it_exports(world, tmp_path):
    target = tmp_path / "precious.onnx"
    target.write_bytes(b"keep")
    link = tmp_path / "model.onnx"
    link.symlink_to(target)
    code, _, err = in_process("models", "export", str(world["run"]), str(link), "--format", "onnx")
    assert_refused(code, err, "is a symbolic link")
    assert link.is_symlink() and target.read_bytes() == b"keep"
    config = world["run"] / "config.yaml"
    before = config.read_bytes()
    code, _, err = in_process("models", "export", str(world["run"]), str(config), "--format", "torchscript")
    assert_refused(code, err, "is one of the inputs")
    assert config.read_bytes() == before


def test_a_successful_export_writes_its_checksum_beside_it(world, tmp_path):
    import hashlib

    out = tmp_path / "model.onnx"
    code, _, err = in_process("models", "export", str(world["run"]), str(out), "--format", "onnx")
    assert code == 0, err
    assert (tmp_path / "model.onnx.sha256").read_text() == \
        f"{hashlib.sha256(out.read_bytes()).hexdigest()}  model.onnx\n"


@pytest.mark.parametrize("overwrite", [False, True])
def test_data_synth_refuses_an_output_folder_that_is_a_symlink(tmp_path, overwrite):
    real = tmp_path / "real"
    real.mkdir()
    (real / "keep.txt").write_text("mine")
    link = tmp_path / "out"
    link.symlink_to(real)
    code, _, err = in_process("data", "synth", str(link), "--per-class", "2", *(["--overwrite"] * overwrite))
    assert_refused(code, err, "is a symbolic link")
    assert (real / "keep.txt").read_text() == "mine" and sorted(p.name for p in real.iterdir()) == ["keep.txt"]


@pytest.mark.parametrize("kind", ["symlink", "fifo", "folder"])
def test_the_atomic_write_helper_never_replaces_what_is_not_a_regular_file(tmp_path, kind):
    path = tmp_path / "thing"
    if kind == "symlink":
        path.symlink_to(tmp_path / "elsewhere")
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    before = os.lstat(path).st_mode
    with pytest.raises(StorageError, match="not a regular file"):
        atomic_write_text(path, "x")
    with pytest.raises(StorageError, match="not a regular file"):
        atomic_write_bytes(path, b"x", checksum=True)
    assert os.lstat(path).st_mode == before and not (tmp_path / "elsewhere").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thing"]  # no temporary file, no sidecar
