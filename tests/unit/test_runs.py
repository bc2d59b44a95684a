"""Tests for plantpheno.run.listing and ``plantpheno runs list|compare``: tables read from local run directories."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import tiny_config
from plantpheno.cli import main
from plantpheno.errors import RunDirError
from plantpheno.run.listing import compare_runs, find_runs, format_table, read_run


@pytest.fixture(scope="module")
def output_dir(tmp_path_factory: pytest.TempPathFactory, disease_root: Path) -> Path:
    """Two real tiny runs (default/a, default/b: different learning rates), an interrupted run
    (other/stopped), a run that crashed after writing its config (default/crashed), one with torn files
    (default/garbled) and a folder that is not a run (default/notes)."""
    from plantpheno import pipeline
    from plantpheno.config import validate_config

    tmp = tmp_path_factory.mktemp("runs-cmd")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(tmp / "home"))
        for name, lr in (("a", 0.003), ("b", 0.01)):
            pipeline.train(validate_config(tiny_config(tmp, run_name=name, data={"root": str(disease_root)},
                                                       training={"learning_rate": lr})))
    out = tmp / "runs"
    config = yaml.safe_load((out / "default/a/config.yaml").read_text())
    stopped = out / "other" / "stopped"
    stopped.mkdir(parents=True)
    (stopped / "config.yaml").write_text(yaml.safe_dump({**config, "experiment": "other", "run_name": "stopped"}))
    (stopped / "run.json").write_text(json.dumps({"status": "interrupted", "epoch": 1, "reason": "SIGINT"}))
    first_epoch = (out / "default/a/metrics.jsonl").read_text().splitlines()[0]
    (stopped / "metrics.jsonl").write_text(first_epoch + "\n" + first_epoch[:20])  # torn last line
    (out / "default/crashed").mkdir()
    (out / "default/crashed/config.yaml").write_text((out / "default/a/config.yaml").read_text())
    (out / "default/garbled").mkdir()
    (out / "default/garbled/config.yaml").write_text("seed: [unclosed\n")
    (out / "default/garbled/run.json").write_text('{"status": "runn')
    (out / "default/notes").mkdir()
    (out / "default/notes/todo.txt").write_text("not a run\n")
    return out


def test_find_runs_lists_complete_and_incomplete_runs_sorted(output_dir):
    runs = find_runs(output_dir)
    assert [(r.experiment, r.name, r.status) for r in runs] == [
        ("default", "a", "completed"), ("default", "b", "completed"), ("default", "crashed", "unknown"),
        ("default", "garbled", "unknown"), ("other", "stopped", "interrupted")]
    a = runs[0]
    assert (a.task, a.backbone, a.epochs_done, a.monitor) == ("classification", "test_resnet", 2, "val/macro_f1")
    assert a.best_epoch in (1, 2) and isinstance(a.best_value, float)
    assert a.params["training.learning_rate"] == 0.003 and a.params["data.image_size"] == 32
    assert {"accuracy", "macro_f1"} <= a.test_metrics.keys() and "num_images" not in a.test_metrics
    assert a.headline_metric == "accuracy" and a.confidence_interval is not None
    assert a.dataset_fingerprint and a.git_commit and a.updated
    crashed, garbled, stopped = runs[2:]
    assert (crashed.epochs_done, crashed.best_value, crashed.test_metrics) == (0, None, {})
    assert crashed.params == a.params and crashed.updated
    assert (garbled.params, garbled.task, garbled.epochs_done) == ({}, None, 0)
    assert (stopped.epochs_done, stopped.best_epoch, stopped.reason) == (1, 1, "SIGINT")
    assert stopped.best_value == json.loads((output_dir / "default/a/metrics.jsonl").read_text().splitlines()[0])[
        "val/macro_f1"]


def test_find_runs_filters_by_experiment_and_names_a_missing_output_dir(output_dir, tmp_path):
    assert [r.name for r in find_runs(output_dir, experiment="other")] == ["stopped"]
    assert find_runs(output_dir, experiment="nope") == []
    with pytest.raises(RunDirError, match=str(tmp_path / "missing")):
        find_runs(tmp_path / "missing")


def test_read_run_rejects_a_folder_that_is_not_a_run(output_dir):
    assert read_run(output_dir / "default" / "b").params["training.learning_rate"] == 0.01
    for path in (output_dir / "default" / "notes", output_dir / "default" / "absent"):
        with pytest.raises(RunDirError, match=f"{path} is not a plantpheno run directory"):
            read_run(path)


def test_compare_runs_shows_only_differing_params_then_fixed_rows_and_metrics(output_dir):
    a, b, stopped = (read_run(output_dir / p) for p in ("default/a", "default/b", "other/stopped"))
    headers, rows = compare_runs([a, b])
    assert headers == ["field", "default/a", "default/b"]
    table = {row[0]: row[1:] for row in rows}
    assert table["training.learning_rate"] == [0.003, 0.01]
    assert list(table)[:4] == ["training.learning_rate", "seed", "model.backbone", "task"]
    for same in ("training.epochs", "data.image_size", "data.root", "output_dir", "run_name", "experiment"):
        assert same not in table
    for row in ("status", "epochs", "best", "test/accuracy", "test/accuracy CI", "test/macro_f1"):
        assert row in table
    _, rows = compare_runs([a, stopped])
    table = {row[0]: row[1:] for row in rows}
    assert "training.learning_rate" not in table and table["status"] == ["completed", "interrupted"]
    assert table["test/accuracy"][1] is None


def test_format_table_aligns_rounds_and_marks_missing():
    text = format_table(["name", "value", "ci"], [["x", 0.123456, [0.1, 0.25]], ["longer", None, None],
                                                  ["y", 1234567.0, None]])
    lines = text.splitlines()
    assert lines[0].split() == ["name", "value", "ci"] and set(lines[1].replace(" ", "")) == {"-"}
    assert lines[2].split() == ["x", "0.1235", "[0.1,", "0.25]"]
    assert lines[3].split() == ["longer", "-", "-"]
    assert lines[4].split() == ["y", "1.235e+06", "-"]
    end = lines[0].index("value") + len("value")  # a numeric column is right-aligned under its header
    assert end == lines[2].index("0.1235") + 6 == lines[3].index(" -") + 2 == lines[4].index("1.235e+06") + 9
    assert lines[2].index("[0.1") == lines[0].index("ci")  # text columns are left-aligned


def test_cli_runs_list_prints_a_table_and_json(output_dir, capsys):
    assert main(["runs", "list", "--output-dir", str(output_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["experiment", "run", "status"]
    rows = {tuple(line.split()[:3]) for line in lines[2:]}
    assert ("default", "a", "completed") in rows and ("other", "stopped", "interrupted") in rows
    assert not any("notes" in line for line in lines) and len(lines) == 2 + 5
    a_line = next(line for line in lines if line.startswith("default     a "))
    assert "2/2" in a_line and "test/accuracy" in a_line and "[" in a_line

    assert main(["runs", "list", "--output-dir", str(output_dir), "--experiment", "default", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in data] == ["a", "b", "crashed", "garbled"]
    assert data[0]["params"]["training.learning_rate"] == 0.003 and data[0]["path"].endswith("a")


def test_cli_runs_compare_prints_differences_and_json(output_dir, capsys):
    a, b = str(output_dir / "default/a"), str(output_dir / "default/b")
    assert main(["runs", "compare", a, b]) == 0
    out = capsys.readouterr().out
    fields = [line.split()[0] for line in out.splitlines()[2:]]
    assert "training.learning_rate" in fields and "training.epochs" not in fields and "seed" in fields
    lr_line = next(line for line in out.splitlines() if line.startswith("training.learning_rate"))
    assert lr_line.split()[1:] == ["0.003", "0.01"]

    assert main(["runs", "compare", a, b, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in data["runs"]] == ["a", "b"]
    assert {"field": "training.learning_rate", "values": [0.003, 0.01]} in data["rows"]


@pytest.mark.parametrize("argv, fragment", [
    (["runs", "list", "--output-dir", "{tmp}/missing"], "{tmp}/missing"),
    (["runs", "compare", "{out}/default/a", "{out}/default/notes"], "{out}/default/notes"),
    (["runs", "compare", "{out}/default/a"], "at least two"),
], ids=["missing-output-dir", "not-a-run", "one-run"])
def test_cli_runs_errors_exit_2_naming_the_path(output_dir, tmp_path, capsys, argv, fragment):
    fill = {"tmp": str(tmp_path), "out": str(output_dir)}
    assert main([arg.format(**fill) for arg in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("plantpheno: error:") and fragment.format(**fill) in err and "Traceback" not in err


def test_runs_list_needs_no_torch_or_tracker(output_dir):
    blocked = ["torch", "timm", "mlflow", "wandb", "tensorboard", "torch.utils.tensorboard"]
    code = (f"import sys; sys.modules.update(dict.fromkeys({blocked!r}));"
            "from plantpheno.cli import main;"
            f"sys.exit(main(['runs', 'list', '--output-dir', {str(output_dir)!r}]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    assert "default     b" in result.stdout
