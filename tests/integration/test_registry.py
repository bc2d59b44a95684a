"""The model registry end to end: real MLflow (sqlite), real exports (ONNX Runtime, TorchScript)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from plantpheno import pipeline
from plantpheno.cli import main as cli
from plantpheno.errors import ExportError, RegistryError
from plantpheno.registry.refs import parse_ref


@pytest.fixture(scope="module")
def trained(tmp_path_factory, disease_root):
    """One tiny classification run, registered automatically as leafnet@candidate."""
    from conftest import tiny_config
    from plantpheno.config import validate_config

    tmp = tmp_path_factory.mktemp("registry")
    raw = tiny_config(tmp, data={"root": str(disease_root)}, registry={"name": "leafnet", "alias": "candidate"},
                      tracking={"system_metrics_interval": 0})
    result = pipeline.train(validate_config(raw))
    return result, f"sqlite:///{(tmp / 'runs' / 'mlflow.db').resolve()}"


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as fh:
        return {row["path"]: row for row in csv.DictReader(fh)}


def test_train_register_promote_predict_by_alias_equals_best_checkpoint(trained, tmp_path, capsys):
    from plantpheno.registry.store import ModelRegistry

    result, uri = trained
    registry = ModelRegistry(uri)
    first = registry.resolve(parse_ref("leafnet@candidate"))
    assert first.version == 1
    assert json.loads((result.run_dir / "run.json").read_text())["registered"]["version"] == 1
    assert cli(["models", "register", str(result.run_dir), "--name", "leafnet", "--registry", uri]) == 0
    assert cli(["models", "promote", "leafnet", "2", "--alias", "champion", "--registry", uri]) == 0
    champion = registry.resolve(parse_ref("leafnet@champion"))
    assert champion.version == 2 and registry.resolve(parse_ref("leafnet@candidate")).version == 1
    tags = champion.tags
    dataset = json.loads((result.run_dir / "dataset.json").read_text())
    assert tags["dataset_fingerprint"] == dataset["fingerprint"] and tags["source_run_dir"] == str(result.run_dir)
    assert len(tags["config_sha256"]) == 64 and tags["git_commit"] and "test_accuracy" in tags

    expected = _rows(result.run_dir / "eval/test/predictions.csv")
    out = tmp_path / "preds.csv"
    capsys.readouterr()
    assert cli(["predict", "leafnet@champion", *expected, "--out", str(out), "--registry", uri]) == 0
    got = _rows(out)
    assert got.keys() == expected.keys()
    for path, row in expected.items():
        assert got[path]["predicted"] == row["predicted"]
        for key in (k for k in row if k.startswith("p_")):
            assert float(got[path][key]) == pytest.approx(float(row[key]), abs=2e-6)

    # moving the alias is atomic and it always resolves to exactly one version
    assert cli(["models", "promote", "leafnet", "1", "--alias", "champion", "--registry", uri]) == 0
    versions = registry.versions("leafnet")
    assert [v.version for v in versions if "champion" in v.aliases] == [1]
    capsys.readouterr()
    assert cli(["models", "show", "leafnet@champion", "--registry", uri]) == 0
    shown = capsys.readouterr().out
    assert "# Model card: test_resnet (classification)" in shown and "bootstrap CI of accuracy" in shown


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exports_pass_the_parity_check(trained, tmp_path, fmt):
    from plantpheno.registry.export import export_package
    from plantpheno.registry.store import ModelRegistry

    _, uri = trained
    package = ModelRegistry(uri).download(parse_ref("leafnet@candidate"), tmp_path / "pkg")
    report = export_package(package, fmt, tmp_path / f"model.{fmt}")
    assert report.max_abs_diff < 1e-4 and report.top1_agreement == 1.0 and report.num_images == 4
    assert (tmp_path / f"model.{fmt}").stat().st_size > 0


def test_broken_export_is_caught_and_not_written(trained, tmp_path):
    from plantpheno.registry.export import export_package
    from plantpheno.registry.store import ModelRegistry

    _, uri = trained
    package = ModelRegistry(uri).download(parse_ref("leafnet"), tmp_path / "pkg")
    assert package.meta["mean"] != [0.0, 0.0, 0.0]
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
            "print(ModelRegistry(sys.argv[1]).register(Path(sys.argv[2]), name='shared').version)")
    procs = [subprocess.Popen([sys.executable, "-c", code, uri, str(result.run_dir)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outputs]
    assert sorted(int(out.strip().splitlines()[-1]) for out, _ in outputs) == [1, 2, 3, 4]
    assert [v.version for v in ModelRegistry(uri).versions("shared")] == [1, 2, 3, 4]


@pytest.mark.parametrize("text", ["../evil", "a/../b", "x..y", "-lead", "a b", "", "n@", "n/0", "n/x", "n@latest"])
def test_bad_names_and_references_are_refused(text):
    with pytest.raises(RegistryError):
        parse_ref(text)


def test_package_holds_no_pickles_and_predict_lists_bad_files(trained, tmp_path, capsys):
    from plantpheno.registry.store import ModelRegistry

    result, uri = trained
    package = ModelRegistry(uri).download(parse_ref("leafnet"), tmp_path / "pkg")
    assert sorted(p.suffix for p in package.folder.iterdir()) == sorted(
        [".json", ".safetensors", ".safetensors", ".md", ".yaml", ".json", ".json", ".json", ".json"])  # + temperature
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
