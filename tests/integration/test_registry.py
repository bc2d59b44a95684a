"""The model registry end to end: real MLflow (sqlite), real exports (ONNX Runtime, TorchScript)."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from plantpheno import pipeline
from plantpheno.cli import main as cli
from plantpheno.errors import ExportError, RegistryError
from plantpheno.registry.refs import parse_ref
from conftest import tiny_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory, disease_root):
    """One tiny classification run in a project folder, registered automatically as leafnet@candidate in the
    project's registry (PROJECT/runs/mlflow.db: training ran there with no registry configured)."""
    from conftest import ISOLATED_VARS, tiny_config
    from plantpheno.config import validate_config

    project = tmp_path_factory.mktemp("project")
    # force: 2 epochs of test_resnet do not clearly beat the majority class on 10 test images (accuracy 0.3 vs 0.2,
    # improvement -0.3 to +0.5); the gate itself is tested in test_a_model_that_does_not_beat_its_baseline_...
    raw = tiny_config(project, data={"root": str(disease_root)}, tracking={"system_metrics_interval": 0},
                      registry={"name": "leafnet", "alias": "candidate", "force": True})
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(project)
        for var in ISOLATED_VARS:
            mp.delenv(var, raising=False)
        result = pipeline.train(validate_config(raw))
    return result, f"sqlite:///{(project / 'runs' / 'mlflow.db').resolve()}"


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as fh:
        return {row["path"]: row for row in csv.DictReader(fh)}


def _same_predictions(got: Path, expected: Path) -> None:
    got_rows, want = _rows(got), _rows(expected)
    assert got_rows.keys() == want.keys()
    for path, row in want.items():
        assert got_rows[path]["predicted"] == row["predicted"]
        for key in (k for k in row if k.startswith("p_")):
            assert float(got_rows[path][key]) == pytest.approx(float(row[key]), abs=2e-6)


def _registered_version(out: str) -> int:
    match = re.search(r"registered leafnet version (\d+)", out)
    assert match, out
    return int(match.group(1))


def test_from_the_project_folder_no_command_needs_a_registry_flag(trained, tmp_path, monkeypatch, capsys,
                                                                   disease_root):
    """Train (auto-registered), register a run and a tuning trial (whose output folder is the study's), list,
    promote, show, predict and export: all find the project's registry by themselves, and say which it is."""
    from plantpheno.registry.store import ModelRegistry

    result, uri = trained
    project = result.run_dir.parents[2]
    monkeypatch.chdir(project)
    where = f"registry: {uri} (the project's registry in {project})"
    registry = ModelRegistry(uri)
    first = registry.resolve(parse_ref("leafnet@candidate"))
    assert json.loads((result.run_dir / "run.json").read_text())["registered"] == {
        "name": "leafnet", "version": first.version, "uri": uri}

    # a tuning trial, overrides after the flags; then register it by hand
    config = project / "tune.yaml"
    config.write_text(yaml.safe_dump(tiny_config(project, data={"root": str(disease_root)}, training={"epochs": 2},
                                                 tracking={"system_metrics_interval": 0})))
    space = project / "space.yaml"
    space.write_text(yaml.safe_dump({"tuning": {"sampler": "grid", "pruner": "none"},
                                     "space": {"training.learning_rate": [0.003]}}))
    assert cli(["tune", str(config), str(space), "--trials", "1", "training.epochs=1"]) == 0
    trial = project / "runs" / "default" / "space" / "trial-0000"
    assert len((trial / "metrics.jsonl").read_text().splitlines()) == 1  # the override after the flags counted
    capsys.readouterr()
    assert cli(["models", "register", str(trial), "--name", "leafnet"]) == 2  # a trial is evaluated on val only
    assert f"{trial} has no evaluation on the test split" in capsys.readouterr().err
    assert cli(["evaluate", str(trial), "--split", "test"]) == 0  # as the message says; at chance, so --force
    capsys.readouterr()
    assert cli(["models", "register", str(trial), "--name", "leafnet", "--force"]) == 0
    out, err = capsys.readouterr()
    version = _registered_version(out)
    assert where in err and version > first.version
    assert not (project / "runs" / "default" / "mlflow.db").exists()  # the study folder got no registry of its own

    # list, from a sub-folder too: every version, each with its aliases
    monkeypatch.chdir(project / "runs" / "default")
    assert cli(["models", "list"]) == 0
    out, err = capsys.readouterr()
    assert where in err
    lines = [line.split() for line in out.splitlines()[2:]]
    assert [int(line[1] if line[0] == "leafnet" else line[0]) for line in lines] == list(range(version, 0, -1))
    candidate_line = next(line for line in lines if str(first.version) in line[:2])
    assert "candidate" in candidate_line
    monkeypatch.chdir(project)

    assert cli(["models", "promote", "leafnet", str(version), "--alias", "champion", "--force"]) == 0
    out, err = capsys.readouterr()
    assert f"leafnet@champion -> version {version}" in out and where in err
    champion = registry.resolve(parse_ref("leafnet@champion"))
    assert champion.version == version and registry.resolve(parse_ref("leafnet@candidate")).version == first.version
    tags = champion.tags
    dataset = json.loads((trial / "dataset.json").read_text())
    assert tags["dataset_fingerprint"] == dataset["fingerprint"] and tags["source_run_dir"] == str(trial)
    assert len(tags["config_sha256"]) == 64 and tags["git_commit"] and "test_accuracy" in tags
    assert float(tags["test_accuracy_ci_low"]) <= float(tags["test_accuracy"]) <= float(tags["test_accuracy_ci_high"])

    expected = trial / "eval" / "test" / "predictions.csv"
    out_csv = tmp_path / "preds.csv"
    assert cli(["predict", "leafnet@champion", *_rows(expected), "--out", str(out_csv)]) == 0
    assert where in capsys.readouterr().err
    _same_predictions(out_csv, expected)
    assert cli(["models", "export", "leafnet@champion", str(tmp_path / "m.onnx"), "--format", "onnx"]) == 0
    assert (tmp_path / "m.onnx").stat().st_size > 0

    # moving the alias is atomic and it always resolves to exactly one version
    assert cli(["models", "promote", "leafnet", str(first.version), "--alias", "champion", "--force"]) == 0
    assert f"(was version {version})" in capsys.readouterr().out
    versions = registry.versions("leafnet")
    assert [v.version for v in versions if "champion" in v.aliases] == [first.version]
    assert cli(["models", "show", "leafnet@champion"]) == 0
    out, err = capsys.readouterr()
    assert "# Model card: test_resnet (classification)" in out and "bootstrap CI of accuracy" in out and where in err
    assert cli(["models", "list", "--registry", uri]) == 0
    assert f"registry: {uri} (--registry)" in capsys.readouterr().err


def test_read_commands_are_fast_and_never_import_mlflow_or_torch(trained, tmp_path):
    """models list/show/promote read MLflow's store directly: MLflow's import alone takes seconds."""
    _, uri = trained
    code = ("import sys; from plantpheno.cli import main; u = sys.argv[1]; "
            "codes = [main(['models', 'list', '--registry', u]), main(['models', 'show', 'leafnet@candidate', "
            "'--registry', u]), main(['models', 'promote', 'leafnet', '1', '--alias', 'speedy', '--registry', u, "
            "'--force'])]; "
            "print(codes, 'mlflow' in sys.modules, 'torch' in sys.modules, file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code, uri], capture_output=True, text=True, timeout=300)
    assert done.stderr.strip().splitlines()[-1] == "[0, 0, 0] False False", done.stderr
    assert "# Model card" in done.stdout and "leafnet@speedy -> version 1" in done.stdout


def test_read_commands_never_create_a_registry(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli(["models", "list"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == "no registered models" and f"(the project's registry in {tmp_path})" in err
    assert cli(["models", "show", "leafnet"]) == 2
    assert "nothing has been registered there yet" in capsys.readouterr().err
    assert cli(["models", "promote", "leafnet", "1", "--alias", "x"]) == 2
    assert list(tmp_path.iterdir()) == []


def test_a_version_for_another_task_or_other_classes_is_refused_unless_forced(trained, tmp_path, capsys,
                                                                              rosette_manifest):
    import torch

    from conftest import tiny_config
    from plantpheno.config import validate_config
    from plantpheno.training.checkpoint import save_checkpoint

    result, _ = trained
    uri = f"sqlite:///{tmp_path / 'jobs.db'}"
    assert cli(["models", "register", str(result.run_dir), "--name", "leafnet", "--registry", uri, "--force"]) == 0
    renamed = tmp_path / "renamed"  # the same run, with its classes in another order (a relabelled dataset)
    shutil.copytree(result.run_dir, renamed)
    best = torch.load(renamed / "checkpoints" / "best.pt", weights_only=True)
    best["meta"]["class_names"] = best["meta"]["class_names"][::-1]
    save_checkpoint(renamed / "checkpoints" / "best.pt", best)  # with its new checksum, as training writes it
    capsys.readouterr()
    assert cli(["models", "register", str(renamed), "--name", "leafnet", "--registry", uri]) == 2
    assert "leafnet version 1 (the latest) does another job: its classes are" in capsys.readouterr().err

    raw = tiny_config(tmp_path, task="regression", data={"manifest": str(rosette_manifest)},
                      tracking={"system_metrics_interval": 0}, run_name="trait")
    trait = pipeline.train(validate_config(raw))
    assert cli(["models", "register", str(trait.run_dir), "--name", "leafnet", "--registry", uri]) == 2
    assert "its task is classification, this run's is regression" in capsys.readouterr().err
    assert cli(["models", "register", str(trait.run_dir), "--name", "leafnet", "--registry", uri, "--force"]) == 0
    from plantpheno.registry.store import ModelRegistry

    assert [(v.version, v.tags["task"]) for v in ModelRegistry(uri).versions("leafnet")] == [
        (1, "classification"), (2, "regression")]


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exports_pass_the_parity_check(trained, tmp_path, fmt):
    from plantpheno.registry.export import export_package
    from plantpheno.registry.store import ModelRegistry

    _, uri = trained
    package = ModelRegistry(uri).download(parse_ref("leafnet@candidate"), tmp_path / "pkg")
    report = export_package(package, fmt, tmp_path / f"model.{fmt}")
    # the 4 stored test images and, as the package has an OOD detector, 4 random ones (which it flags)
    assert report.max_abs_diff < 1e-4 and report.top1_agreement == 1.0 and report.num_images == 8
    assert (tmp_path / f"model.{fmt}").stat().st_size > 0


def test_broken_export_is_caught_and_not_written(trained, tmp_path):
    from plantpheno.registry.export import export_package
    from plantpheno.registry.store import ModelRegistry

    _, uri = trained
    package = ModelRegistry(uri).download(parse_ref("leafnet"), tmp_path / "pkg")
    assert list(package.meta.mean) != [0.0, 0.0, 0.0]
    out = tmp_path / "broken.onnx"
    with pytest.raises(ExportError, match=r"parity check failed: onnx export .* max \|difference\|"):
        export_package(package, "onnx", out, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # normalisation forgotten
    assert not out.exists() and not list(tmp_path.glob(".broken.onnx*"))


def test_four_processes_registering_at_once_get_four_distinct_versions(trained, tmp_path):
    from plantpheno.registry.store import ModelRegistry

    result, _ = trained
    uri = f"sqlite:///{tmp_path / 'shared.db'}"
    ModelRegistry(uri).client.search_registered_models()  # create the tables once, as a server would have
    code = ("import sys; from pathlib import Path; from plantpheno.registry.store import ModelRegistry; "
            "print(ModelRegistry(sys.argv[1]).register(Path(sys.argv[2]), name='shared', force=True).version)")
    procs = [subprocess.Popen([sys.executable, "-c", code, uri, str(result.run_dir)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outputs]
    assert sorted(int(out.strip().splitlines()[-1]) for out, _ in outputs) == [1, 2, 3, 4]
    assert [v.version for v in ModelRegistry(uri).versions("shared")] == [1, 2, 3, 4]


def test_reading_the_sqlite_store_directly_agrees_with_mlflows_client(trained, tmp_path):
    """What plantpheno reads from MLflow's tables without MLflow is what MLflow's own client reads: versions (a
    deleted one skipped), tags, sources, descriptions, aliases; and an alias it sets is the one MLflow sees."""
    from plantpheno.registry.index import MlflowIndex, SqliteIndex
    from plantpheno.registry.store import ModelRegistry

    result, _ = trained
    registry = ModelRegistry(f"sqlite:///{tmp_path / 'parity.db'}")
    for name in ("alpha", "alpha", "alpha", "beta"):
        registry.register(result.run_dir, name=name, alias="candidate", force=True)
    registry.delete("alpha", 2)
    registry.promote("alpha", 3, "champion", force=True)
    registry.client.set_registered_model_alias("beta", "legacy", "1")
    fast, slow = SqliteIndex(tmp_path / "parity.db"), MlflowIndex(registry.uri)
    assert isinstance(registry.index, SqliteIndex) and fast.compatible
    assert [(v.name, v.version) for v in fast.versions()] == [("alpha", 1), ("alpha", 3), ("beta", 1)]
    assert fast.versions() == slow.versions() and fast.versions("alpha") == slow.versions("alpha")
    assert fast.aliases() == slow.aliases() == {"alpha": {"candidate": 3, "champion": 3}, "beta": {
        "candidate": 1, "legacy": 1}}
    assert fast.model_names() == slow.model_names() == ["alpha", "beta"]
    assert registry.client.get_model_version_by_alias("alpha", "champion").version in (3, "3")


@pytest.mark.parametrize("text", ["../evil", "a/../b", "x..y", "-lead", "a b", "", "n@", "n/0", "n/x", "n@latest"])
def test_bad_names_and_references_are_refused(text):
    with pytest.raises(RegistryError):
        parse_ref(text)


def test_package_holds_no_pickles_and_predict_lists_bad_files(trained, tmp_path, capsys):
    from plantpheno.registry.store import ModelRegistry

    result, uri = trained
    # the run trained here (the latest version may be a tuning trial, which fits no OOD detector)
    package = ModelRegistry(uri).download(parse_ref("leafnet@candidate"), tmp_path / "pkg")
    files = [p for p in package.folder.iterdir() if p.suffix != ".sha256"]
    assert sorted(p.suffix for p in files) == sorted(
        [".json", ".safetensors", ".safetensors", ".md", ".yaml", ".json", ".json", ".json", ".json",
         ".json", ".npz"])  # + temperature, the OOD detector and its features
    assert all(p.with_name(p.name + ".sha256").is_file() for p in files)  # each with its checksum
    images = tmp_path / "images"
    images.mkdir()
    good = next(iter(_rows(result.run_dir / "eval/test/predictions.csv")))
    (images / "leaf.jpg").write_bytes(Path(good).read_bytes())
    (images / "broken.jpg").write_bytes(b"not an image")
    (images / "empty.png").write_bytes(b"")
    out = tmp_path / "preds.csv"
    assert cli(["predict", str(result.run_dir), str(images), "--out", str(out)]) == 0
    assert list(_rows(out)) == [str(images / "leaf.jpg")]
    err = capsys.readouterr().err
    assert "skipped 2 unreadable file(s)" in err and "broken.jpg" in err and "empty.png" in err
    assert len((tmp_path / "preds.skipped.csv").read_text().splitlines()) == 3
    assert cli(["predict", "no-such-model", str(images), "--registry", uri]) == 2


def test_a_model_that_does_not_clearly_beat_its_baseline_needs_force_to_be_registered_or_aliased(trained, tmp_path,
                                                                                                 capsys):
    import plantpheno as pp
    from plantpheno.registry.store import ModelRegistry

    result, _ = trained  # 2 epochs: not clearly better than the majority class on its 10 test images
    verdict = json.loads((result.run_dir / "eval" / "test" / "metrics.json").read_text())["baseline"]["verdict"]
    assert verdict["verdict"] != "better"
    uri = f"sqlite:///{tmp_path / 'gate.db'}"
    assert cli(["models", "register", str(result.run_dir), "--name", "gate", "--alias", "candidate",
                "--registry", uri]) == 2
    err = capsys.readouterr().err
    assert f"{result.run_dir} does not clearly beat its trivial baseline on the test split" in err
    assert f"accuracy {verdict['model']:.4g} vs {verdict['baseline']:.4g}" in err and "interval" in err
    assert "registering it as gate (alias candidate) needs --force" in err and "Traceback" not in err
    assert not (tmp_path / "gate.db").exists() or not ModelRegistry(uri).list_versions()  # nothing, no alias

    assert cli(["models", "register", str(result.run_dir), "--name", "gate", "--registry", uri, "--force"]) == 0
    registry = ModelRegistry(uri)
    [version] = registry.versions("gate")
    assert version.aliases == () and version.tags["test_vs_baseline"] == verdict["verdict"]
    assert cli(["models", "promote", "gate", "1", "--alias", "champion", "--registry", uri]) == 2
    assert "does not clearly beat its trivial baseline" in capsys.readouterr().err
    assert ModelRegistry(uri).versions("gate")[0].aliases == ()
    assert cli(["models", "promote", "gate", "1", "--alias", "champion", "--registry", uri, "--force"]) == 0

    with pytest.raises(RegistryError, match=r"does not clearly beat .* needs --force \(force=True in Python\)"):
        pp.register_model(result.run_dir, "gate", alias="candidate", registry=uri)
    with pytest.raises(RegistryError, match="needs --force"):
        pp.Registry(uri).promote("gate", 1, "candidate")
    assert [v.aliases for v in ModelRegistry(uri).versions("gate")] == [("champion",)]
    assert pp.register_model(result.run_dir, "gate", alias="candidate", registry=uri, force=True).version == 2


def test_a_model_that_beats_its_baseline_passes_the_gate(tmp_path):
    from plantpheno.records.evaluation import Verdict
    from plantpheno.registry.store import check_beats_baseline

    better = Verdict(metric="accuracy", verdict="better", text="beats the baseline: accuracy 0.9 vs 0.25")
    check_beats_baseline(better, run_dir=tmp_path, what="registering it")  # no error
    for word in ("worse", "not clearly better"):
        with pytest.raises(RegistryError, match="needs --force"):
            check_beats_baseline(better.model_copy(update={"verdict": word}), run_dir=tmp_path,
                                 what="registering it")
    with pytest.raises(RegistryError, match="has no evaluation on the test split"):
        check_beats_baseline(None, run_dir=tmp_path, what="registering it")
