"""Silent corruption (issue 27): a flipped byte in a checkpoint or a model package file must be caught at every
entry point that reads it (resume, evaluate, report, predict, export, register, the served model), with one message
naming the file and what to use instead, and nothing overwritten. Files written before checksums still load."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import pytest
from cli_harness import assert_refused, in_process

TINY = {"seed": 0, "device": "cpu", "model": {"backbone": "test_resnet"},
        "data": {"image_size": 32, "batch_size": 8, "num_workers": 0},
        "training": {"epochs": 2, "progress_bar": False},
        "evaluation": {"bootstrap_samples": 20, "report": False}, "tracking": {"system_metrics_interval": 0}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, disease_root) -> dict[str, Path | str]:
    """One tiny two-epoch run, registered as ``leafnet`` in its own sqlite registry."""
    from plantpheno import pipeline
    from plantpheno.config import validate_config

    tmp = tmp_path_factory.mktemp("integrity")
    raw = json.loads(json.dumps(TINY))
    registry = f"sqlite:///{(tmp / 'trained' / 'mlflow.db').resolve()}"
    # force: a tiny run does not clearly beat its baseline on 10 test images (the gate: test_registry.py)
    raw.update(output_dir=str(tmp / "trained"), run_name="run",
               registry={"name": "leafnet", "uri": registry, "force": True})
    raw["data"]["root"] = str(disease_root)
    result = pipeline.train(validate_config(raw))
    model_dir = next((tmp / "trained").rglob("MLmodel")).parent
    image = next(Path(disease_root).rglob("*.png"), None) or next(Path(disease_root).rglob("*.jpg"))
    return {"tmp": tmp, "run": result.run_dir, "registry": registry, "model_dir": model_dir, "image": image}


def _flip(path: Path, offset: int | None = None) -> None:
    """Invert one byte (in the middle by default), as a bad disk sector or a careless edit would."""
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _copy_run(trained, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(trained["run"], run)
    return run


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and "checkpoints" not in p.parts}


def test_every_checkpoint_and_package_file_has_a_sha256sum_compatible_sidecar(trained):
    from plantpheno.files.atomic import checksum_file

    run, model_dir = trained["run"], trained["model_dir"]
    package = next(model_dir.rglob("plantpheno_model.json")).parent
    files = [run / "checkpoints" / "best.pt", run / "checkpoints" / "last.pt",
             *(package / n for n in ("model.safetensors", "plantpheno_model.json", "sample_inputs.safetensors",
                                     "MODEL_CARD.md", "config.yaml"))]
    for path in files:
        line = checksum_file(path).read_text().strip()
        assert line == f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}", path


def test_evaluate_refuses_a_flipped_best_pt_and_keeps_the_good_evaluation(trained, tmp_path):
    run = _copy_run(trained, tmp_path)
    before = _digests(run)
    _flip(run / "checkpoints" / "best.pt")
    code, _, err = in_process("evaluate", str(run))
    assert_refused(code, err, "best.pt is damaged", "SHA-256", "last.pt", "nothing was overwritten")
    assert _digests(run) == before  # eval/test/metrics.json, temperature.json, ... untouched


def test_report_refuses_a_flipped_best_pt(trained, tmp_path):
    run = _copy_run(trained, tmp_path)
    _flip(run / "checkpoints" / "best.pt")
    code, _, err = in_process("report", str(run))
    assert_refused(code, err, "best.pt is damaged")
    assert not (run / "report.html").exists()


def test_resume_refuses_a_flipped_last_pt(trained, tmp_path):
    run = _copy_run(trained, tmp_path)
    before = _digests(run)
    _flip(run / "checkpoints" / "last.pt")
    code, _, err = in_process("train", "--resume", str(run))
    assert_refused(code, err, "last.pt is damaged", "Resuming cannot continue from it")
    assert {k: v for k, v in _digests(run).items() if k != "run.json"} == \
        {k: v for k, v in before.items() if k != "run.json"}


def test_a_truncated_checkpoint_is_caught_by_its_checksum_too(trained, tmp_path):
    run = _copy_run(trained, tmp_path)
    best = run / "checkpoints" / "best.pt"
    best.write_bytes(best.read_bytes()[:-100])
    code, _, err = in_process("evaluate", str(run))
    assert_refused(code, err, "best.pt is damaged")


@pytest.mark.parametrize("command", ["predict", "register"])
def test_predict_and_register_from_a_run_refuse_a_flipped_best_pt(trained, tmp_path, command):
    run = _copy_run(trained, tmp_path)
    _flip(run / "checkpoints" / "best.pt")
    registry = f"sqlite:///{tmp_path / 'other.db'}"
    args = (("predict", str(run), str(trained["image"])) if command == "predict"
            else ("models", "register", str(run), "--name", "copy", "--registry", registry, "--force"))
    code, out, err = in_process(*args)
    assert_refused(code, err, "best.pt is damaged")
    assert out == "" and not (tmp_path / "other.db").exists()


@pytest.mark.parametrize("name", ["model.safetensors", "plantpheno_model.json", "sample_inputs.safetensors"])
@pytest.mark.parametrize("command", ["predict", "export"])
def test_a_flipped_package_file_is_caught_by_predict_and_export(trained, tmp_path, name, command):
    model = tmp_path / "model"
    shutil.copytree(trained["model_dir"], model)
    _flip(next(model.rglob(name)))
    out = tmp_path / "model.onnx"
    args = (("predict", str(model), str(trained["image"]), "--out", str(tmp_path / "p.csv")) if command == "predict"
            else ("models", "export", str(model), str(out), "--format", "onnx"))
    code, stdout, err = in_process(*args)
    if command == "predict" and name == "sample_inputs.safetensors":
        assert code == 0, err  # predict does not read the sample images
        return
    assert_refused(code, err, f"{name} is damaged", "Register the run again")
    assert stdout == "" and not out.exists() and not (tmp_path / "p.csv").exists()  # the parity check never ran on the bad weights


def test_the_registered_version_is_checked_when_loaded_by_name_and_as_an_mlflow_model(trained):
    import mlflow.pyfunc

    from plantpheno.errors import IntegrityError

    weights = next(trained["model_dir"].rglob("model.safetensors"))
    good = weights.read_bytes()
    try:
        _flip(weights)
        code, _, err = in_process("predict", "leafnet/1", str(trained["image"]), "--registry", trained["registry"])
        assert_refused(code, err, "model.safetensors is damaged")
        with pytest.raises(IntegrityError, match="model.safetensors is damaged"):
            mlflow.pyfunc.load_model(str(trained["model_dir"]))  # what `mlflow models serve` runs
    finally:
        weights.write_bytes(good)
    code, out, err = in_process("predict", "leafnet/1", str(trained["image"]), "--registry", trained["registry"],
                                "--out", str(trained["tmp"] / "p.csv"))
    assert code == 0, err


def test_files_written_before_checksums_still_load_reported_once_as_unverified(trained, tmp_path, caplog):
    from plantpheno.registry.package import ModelPackage

    model = tmp_path / "model"
    shutil.copytree(trained["model_dir"], model)
    for sidecar in model.rglob("*.sha256"):
        sidecar.unlink()
    with caplog.at_level(logging.INFO, logger="plantpheno"):
        package = ModelPackage.open(model)
        package.build_model()
        package.build_model()
    notes = [r.getMessage() for r in caplog.records if "unverified" in r.getMessage()]
    assert len(notes) == 2 and any("model.safetensors" in n for n in notes), notes  # metadata, weights: once each


def test_evaluate_says_when_it_falls_back_to_last_pt(trained, tmp_path):
    run = _copy_run(trained, tmp_path)
    (run / "checkpoints" / "best.pt").unlink()
    code, _, err = in_process("evaluate", str(run))
    assert code == 0, err
    assert "best.pt is missing: using last.pt instead (epoch 2" in err


def test_a_crash_between_the_two_renames_leaves_a_sidecar_that_accepts_either_file(tmp_path, monkeypatch):
    import os

    from plantpheno.files.atomic import atomic_write_bytes, verify_checksum
    from plantpheno.errors import IntegrityError

    path = tmp_path / "w.bin"
    atomic_write_bytes(path, b"old", checksum=True)
    calls = []
    real = os.replace

    def crash_on_data_rename(src, dst):
        if Path(dst) == path:
            calls.append(dst)
            raise KeyboardInterrupt  # the process dies after the sidecar named both, before the data rename
        return real(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_data_rename)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(path, b"new", checksum=True)
    monkeypatch.setattr(os, "replace", real)
    assert calls and path.read_bytes() == b"old"
    assert verify_checksum(path)  # the old file is still accepted
    path.write_bytes(b"new")  # as if the rename had happened before the crash
    assert verify_checksum(path)
    path.write_bytes(b"neW")
    with pytest.raises(IntegrityError, match="w.bin is damaged"):
        verify_checksum(path)


def test_a_sidecar_that_is_not_a_checksum_file_is_reported(tmp_path):
    from plantpheno.files.atomic import atomic_write_bytes, checksum_file, verify_checksum
    from plantpheno.errors import IntegrityError

    path = tmp_path / "w.bin"
    atomic_write_bytes(path, b"data", checksum=True)
    checksum_file(path).write_text("not a digest\n")
    with pytest.raises(IntegrityError, match="is not a SHA-256 checksum file"):
        verify_checksum(path)



def test_a_metrics_jsonl_cut_mid_line_is_reported_and_its_lines_are_kept_on_resume(trained, tmp_path, caplog):
    from plantpheno.run.listing import read_history

    run = _copy_run(trained, tmp_path)
    log = run / "metrics.jsonl"
    first, second = log.read_text().splitlines()
    log.write_text(f"{first}\n{second[:25]}")  # a copy cut in the middle of epoch 2's line
    with caplog.at_level(logging.WARNING, logger="plantpheno"):
        assert [r["epoch"] for r in read_history(run)] == [1]
    assert f"{log}: line 2 is not an epoch record" in caplog.text

    code, _, err = in_process("train", "--resume", str(run))
    assert code == 0, err
    assert "metrics.jsonl: line 2 is not an epoch record" in err and "moved to metrics.jsonl.unreadable" in err
    assert (run / "metrics.jsonl.unreadable").read_text() == second[:25] + "\n"  # nothing is lost
    assert log.read_text().splitlines()[0] == first  # the epoch before it is kept
