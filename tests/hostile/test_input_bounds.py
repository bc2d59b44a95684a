"""Strict inputs (issue 27): sizes that come from input are bounded before anything is made (tuning grids, integer
ranges, workers, threads); YAML duplicate keys, booleans as numbers, names ending in a newline, non-ASCII digits
are refused with one message naming them; CSV text cells are written so spreadsheets do not run them; a FIFO in a
data folder is reported instead of hanging ``train``."""

from __future__ import annotations

import csv
import os
import threading
import time

import pytest
import yaml
from cli_harness import assert_refused, in_process

from plantpheno.errors import ConfigError, RegistryError, TuningError


# ----------------------------------------------------------------------------------------------
# tuning bounds
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec, fragment", [
    ({"type": "int", "low": 0, "high": 4_000_000_000}, "the grid has 4,000,000,001 combinations, more than 100,000"),
    ({"type": "float", "low": 0, "high": 1, "grid_points": 100_000_000}, "grid_points <= 100,000"),
    ({"type": "float", "low": 0, "high": 1, "step": 2**-30}, "the grid has 1,073,741,825 combinations"),
])
def test_huge_grids_are_refused_at_once(spec, fragment):
    from plantpheno.tuning.space import parse_space

    started = time.monotonic()
    with pytest.raises(ConfigError, match=fragment):
        parse_space({"training.epochs" if spec["type"] == "int" else "model.dropout": spec}).grid()
    assert time.monotonic() - started < 2  # counted, never made (was a MemoryError, or a hang)


def test_grid_of_many_fields_is_counted_before_it_is_made():
    from plantpheno.tuning.space import parse_space

    space = parse_space({"training.epochs": {"type": "int", "low": 1, "high": 1000},
                         "data.batch_size": {"type": "int", "low": 1, "high": 1000}})
    with pytest.raises(ConfigError, match="1,000,000 combinations"):
        space.grid()


@pytest.mark.parametrize("workers", [0, 10**6, True, 2.5])
def test_tune_workers_bounded(workers, make_config):
    from plantpheno.tuning.settings import TuneSettings
    from plantpheno.tuning.space import parse_space
    from plantpheno.tuning.study import tune

    with pytest.raises(TuningError, match="workers: got .*; expected an integer from 1 to 256"):
        tune(make_config(data={"root": "."}), parse_space({"model.dropout": [0.0]}), settings=TuneSettings(),
             workers=workers)


# ----------------------------------------------------------------------------------------------
# config strictness
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("override, fragment", [
    ("training.epochs=true", "training.epochs: got True; expected a number, not true"),
    ("data.batch_size=false", "data.batch_size: got False; expected a number, not false"),
    ("training.learning_rate=true", "training.learning_rate: got True; expected a number, not true"),
    ("seed=true", "seed: got True; expected a number, not true"),
    ("data.num_workers=1000000", "data.num_workers: got 1000000; expected an integer from 0 to 1024"),
    ("training.threads=100000", "training.threads: got 100000"),
    ("device=cuda:²", "device: got 'cuda:²'"),
])
def test_config_values(write_config, tmp_path, override, fragment):
    config = write_config(data={"root": str(tmp_path)})
    code, _, err = in_process("config", "show", str(config), override)
    assert_refused(code, err, fragment)


def test_yaml_duplicate_keys(tmp_path):
    for text, key, lines in (("training:\n  epochs: 5\n  epochs: 50\n", "epochs", "lines 2 and 3"),
                             ("data: {root: ., root: /etc}\n", "root", "lines 1 and 1"),
                             ("seed: 1\nseed: 2\n", "seed", "lines 1 and 2")):
        path = tmp_path / "dup.yaml"
        path.write_text(text)
        code, _, err = in_process("config", "show", str(path))
        assert_refused(code, err, str(path), f"key '{key}' appears twice in one mapping ({lines})")


def test_yaml_duplicate_keys_in_a_tuning_space(tmp_path):
    from plantpheno.tuning.settings import load_tuning_file

    path = tmp_path / "space.yaml"
    path.write_text("space:\n  model.dropout: [0.1]\n  model.dropout: [0.2]\n")
    with pytest.raises(ConfigError, match="'model.dropout' appears twice"):
        load_tuning_file(path)


@pytest.mark.parametrize("text", ["leafnet\n", "leafnet\n@champion", "leaf\nnet"])
def test_model_names_with_a_newline(text):
    from plantpheno.registry.refs import check_name, parse_ref

    with pytest.raises(RegistryError, match="invalid"):
        parse_ref(text)
    with pytest.raises(RegistryError, match="invalid"):
        check_name(text.split("@")[0])


@pytest.mark.parametrize("ref", ["leafnet/²", "leafnet/١٢", "leafnet/𝟙"])
def test_versions_are_ascii_digits(ref):
    from plantpheno.registry.refs import parse_ref

    with pytest.raises(RegistryError, match="the version after '/' must be a number"):
        parse_ref(ref)


@pytest.mark.parametrize("version", ["²", "١٢", "𝟙"])
def test_cli_version_arguments_are_ascii_digits(version):
    code, _, err = in_process("models", "promote", "leafnet", version, "champion")
    assert code == 2 and "expected a whole number" in err and "Traceback" not in err


# ----------------------------------------------------------------------------------------------
# CSV formula neutralisation
# ----------------------------------------------------------------------------------------------


def test_csv_text_cells_are_neutralised_numbers_are_not(tmp_path):
    from plantpheno.files.csvfile import read_csv, write_csv

    cells = ['=HYPERLINK("http://evil","x")', "+cmd", "-2+3", "@SUM(A1)", "\tx", "\rx", "'=quoted", "plain",
             "-0.5", "+1e3", -0.5, 3, "-leaf.jpg"]
    path = tmp_path / "out.csv"
    write_csv(path, [[f"c{i}" for i in range(len(cells))], cells])
    with path.open(newline="") as fh:  # what a spreadsheet sees
        raw = list(csv.reader(fh))[1]
    for cell, written in zip(cells, raw, strict=True):
        text = str(cell)
        if text[:1] in ("=", "+", "-", "@", "\t", "\r") and text not in ("-0.5", "+1e3"):
            assert written == "'" + text, (cell, written)
        elif text.startswith("'"):
            assert written == "''=quoted"
        else:
            assert written == text, (cell, written)  # numbers, negative ones included, stay numbers
    with read_csv(path) as reader:  # and plantpheno reads back exactly what it wrote
        row = next(reader)
    assert [row[f"c{i}"] for i in range(len(cells))] == [str(c) for c in cells]


def test_predictions_csv_label_cannot_run_as_a_formula(tmp_path):
    """A class folder named like a formula: the predictions CSV holds it quoted, and training read back its own
    split.csv unchanged (the class is still the folder's name)."""
    from PIL import Image

    import plantpheno as pp

    root = tmp_path / "leaves"
    for k, name in enumerate(("=HYPERLINK(\"x\")", "healthy")):
        (root / name).mkdir(parents=True)
        for i in range(8):
            Image.new("RGB", (24, 24), (40 * k + 3 * i, 120, 60)).save(root / name / f"-{i}.png")
    from conftest import tiny_config

    raw = tiny_config(tmp_path, data={"root": str(root), "checks": {"enabled": False}},
                      training={"epochs": 1}, evaluation={"bootstrap_samples": 20},
                      tracking={"system_metrics_interval": 0})
    run = pp.train(raw, verbose=False)
    for written in (run.path / "split.csv", run.path / "eval" / "test" / "predictions.csv"):
        with written.open(newline="") as fh:  # what a spreadsheet sees: no cell it would run
            cells = [cell for row in csv.reader(fh) for cell in row]
        assert "'=HYPERLINK(\"x\")" in cells, written
        assert not [c for c in cells if c[:1] in ("=", "+", "-", "@") and not _is_number(c)], written
    assert run.metrics()["class_names"] == ['=HYPERLINK("x")', "healthy"]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# ----------------------------------------------------------------------------------------------
# FIFO in the data folder
# ----------------------------------------------------------------------------------------------


def test_fifo_in_the_data_folder_does_not_hang_train(disease_root, tmp_path):
    import shutil

    root = tmp_path / "leaves"
    shutil.copytree(disease_root, root)
    fifo = root / "blight" / "pipe.jpg"
    os.mkfifo(fifo)
    config = tmp_path / "c.yaml"
    from conftest import tiny_config

    config.write_text(yaml.safe_dump(tiny_config(tmp_path, data={"root": str(root)}, training={"epochs": 1})))
    outcome: dict[str, object] = {}
    worker = threading.Thread(target=lambda: outcome.update(result=in_process("train", str(config))), daemon=True)
    worker.start()
    worker.join(300)
    if worker.is_alive():  # let the hung reader go, so the test session can end
        with open(fifo, "wb"):
            pass
        pytest.fail("train hangs on a FIFO in the data folder")
    code, _, err = outcome["result"]
    assert_refused(code, err, "pipe.jpg", "is a FIFO (named pipe), not an image file")
