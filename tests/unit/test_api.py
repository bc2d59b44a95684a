"""The public Python API without training: lazy import, config loading, image inputs, run and CLI-flag errors."""

from __future__ import annotations

import argparse
import inspect
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import plantpheno
from plantpheno.errors import ConfigError, DataError, RunDirError

REPO = Path(__file__).resolve().parents[2]


def test_import_and_every_api_name_load_no_torch():
    code = ("import sys, plantpheno; names = [getattr(plantpheno, n) for n in plantpheno.__all__]; "
            "print(len(names), 'torch' in sys.modules, 'mlflow' in sys.modules, 'PIL' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(len(plantpheno.__all__)), "False", "False", "False"]


def test_api_names_are_listed_documented_and_typed():
    from plantpheno import api

    assert set(plantpheno.__all__) == {"__version__", *api.__all__}
    assert set(api.__all__) <= set(dir(plantpheno))
    for name in api.__all__:
        obj = getattr(plantpheno, name)
        assert obj is getattr(api, name) and inspect.getdoc(obj), name
        if inspect.isfunction(obj):
            assert "return" in obj.__annotations__, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        plantpheno.nope  # noqa: B018


def _write_yaml(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path


def test_load_config_from_a_file_a_mapping_or_a_config_with_overrides(tmp_path):
    raw = {"data": {"root": str(tmp_path)}, "training": {"epochs": 3}}
    path = _write_yaml(tmp_path / "c.yaml", raw)
    assert plantpheno.load_config(path, ["training.epochs=5"]).training.epochs == 5
    mapped = plantpheno.load_config(raw, {"training.epochs": 7, "data.augment.crop_scale": (0.8, 1.0)})
    assert mapped.training.epochs == 7 and tuple(mapped.data.augment.crop_scale) == (0.8, 1.0)
    assert raw == {"data": {"root": str(tmp_path)}, "training": {"epochs": 3}}, "the caller's mapping changed"
    derived = plantpheno.load_config(mapped, {"model.backbone": "test_resnet"})
    assert derived.training.epochs == 7 and derived.model.backbone == "test_resnet" and mapped.model.backbone != (
        "test_resnet")
    with pytest.raises(ConfigError, match=r"(?s)model.backbon: unknown field.*training.epochs: got 'ten'"):
        plantpheno.load_config(raw, {"training.epochs": "ten", "model.backbon": "x"})
    with pytest.raises(ConfigError, match="a list of key.sub=value strings or a mapping"):
        plantpheno.load_config(raw, "training.epochs=3")
    with pytest.raises(ConfigError, match="not a dotted field name"):
        plantpheno.load_config(raw, {"training..epochs": 3})


def test_data_path_fills_root_or_manifest_and_output_path_fills_output_dir(tmp_path):
    raw = {"data": {"root": "elsewhere", "manifest": "old.csv"}}
    folder = tmp_path / "leaves"
    folder.mkdir()
    csv_file = tmp_path / "labels.CSV"
    csv_file.write_text("path,label\n")
    c = plantpheno.load_config(raw, data_path=folder, output_path=tmp_path / "out")
    assert (c.data.root, c.data.manifest, c.output_dir) == (folder, None, tmp_path / "out")
    c = plantpheno.load_config(raw, data_path=csv_file)
    assert (c.data.root, c.data.manifest) == (None, csv_file)
    c = plantpheno.load_config(raw, [f"data.root={folder}"], data_path=csv_file)
    assert (c.data.root, c.data.manifest) == (folder, csv_file), "an override wins over the data path"
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match=r"notes.txt is a file but not a .csv manifest; expected an image folder"):
        plantpheno.load_config(raw, data_path=tmp_path / "notes.txt")
    with pytest.raises(ConfigError, match=r"data path .*nowhere does not exist"):
        plantpheno.load_config(raw, data_path=tmp_path / "nowhere")


def _train_args(*argv: str) -> argparse.Namespace:
    from plantpheno.cli import build_parser
    from plantpheno.cli.train_cmd import resolve_arguments

    return resolve_arguments(build_parser().parse_args(["train", *argv]))


def test_train_script_flags_fold_into_config_and_overrides():
    args = _train_args("--config", "c.yaml", "--data-path", "d", "--output-path", "o", "training.epochs=2", "a.b=1")
    assert (args.config, args.overrides, args.data_path, args.output_path) == (
        Path("c.yaml"), ["training.epochs=2", "a.b=1"], Path("d"), Path("o"))
    args = _train_args("c.yaml", "x=1", "--data-path", "d")
    assert (args.config, args.overrides, args.data_path) == (Path("c.yaml"), ["x=1"], Path("d"))
    with pytest.raises(ConfigError, match="the config is given twice"):
        _train_args("c.yaml", "--config", "other.yaml")
    with pytest.raises(ConfigError, match="--resume RUN_DIR takes no config or overrides"):
        _train_args("--resume", "r", "--data-path", "d")
    with pytest.raises(ConfigError, match=r"give a CONFIG file \(or --config CONFIG"):
        _train_args("--data-path", "d")


def test_image_arrays_become_rgb_as_files_do(tmp_path):
    from plantpheno.registry.predict import to_rgb_image

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "x.png")
    from_file = np.asarray(to_rgb_image(tmp_path / "x.png"))
    assert np.array_equal(from_file, rgb)
    assert np.array_equal(np.asarray(to_rgb_image((tmp_path / "x.png").read_bytes())), rgb)
    assert np.array_equal(np.asarray(to_rgb_image(rgb.astype(np.float32) / 255)), rgb)
    assert np.array_equal(np.asarray(to_rgb_image(rgb.astype(np.uint16) * 257)), rgb)
    grey = rgb[:, :, 0]
    assert np.array_equal(np.asarray(to_rgb_image(grey[:, :, None])), np.stack([grey] * 3, axis=2))
    rgba = np.concatenate([rgb, np.zeros((9, 7, 1), np.uint8)], axis=2)  # transparent: composited on black
    assert not np.asarray(to_rgb_image(rgba)).any()
    for bad in (np.zeros((3, 9, 7, 2)), np.zeros((9, 7, 2)), np.zeros((0, 7, 3)), np.array([["a"]])):
        with pytest.raises(DataError, match="image array of (shape|dtype)"):
            to_rgb_image(bad)
    with pytest.raises(DataError, match="cannot read an image from a dict"):
        to_rgb_image({})


def test_a_folder_that_is_not_a_run_is_refused_by_name(tmp_path):
    with pytest.raises(RunDirError, match=r"nowhere is not a plantpheno run directory \(no such folder\)"):
        plantpheno.open_run(tmp_path / "nowhere")
    with pytest.raises(RunDirError, match=r"no config.yaml or run.json in it"):
        plantpheno.Run(tmp_path)


def test_pyfunc_input_rows_base64_bytes_paths_and_errors(tmp_path):
    import base64

    import pandas as pd

    from plantpheno.registry.pyfunc import _row_image

    png = tmp_path / "x.png"
    Image.new("RGB", (4, 4)).save(png)
    data = png.read_bytes()
    frame = pd.DataFrame({"image": [data, base64.b64encode(data), base64.b64encode(data).decode(), None],
                          "path": [None, None, None, str(png)]})
    # a path is read only inside the allowed folder (tmp_path here), and then as its bytes
    assert [_row_image(frame, i, tmp_path.resolve()) for i in range(4)] == [data, data, data, data]
    with pytest.raises(ValueError, match="neither 'image' nor 'path'"):
        _row_image(frame, 3, None)  # no allowed folder: paths are never read (predict refuses the request first)
    with pytest.raises(ValueError, match="not base64"):
        _row_image(pd.DataFrame({"image": ["not base64!"]}), 0, None)
    with pytest.raises(ValueError, match="neither 'image' nor 'path'"):
        _row_image(pd.DataFrame({"image": [None]}), 0, None)
