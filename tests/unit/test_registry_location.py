"""One rule for where the model registry is (registry/location.py), the same for every command."""

from __future__ import annotations

from pathlib import Path

import pytest

from plantpheno.registry.location import locate_registry, resolve_registry_uri


def _db(folder: Path) -> Path:
    path = folder / "runs" / "mlflow.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_without_anything_set_it_is_the_project_folders_runs_mlflow_db(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    location = locate_registry()
    assert location.uri == f"sqlite:///{tmp_path.resolve()}/runs/mlflow.db"
    assert location.describe() == f"registry: {location.uri} (the project's registry in {tmp_path.resolve()})"
    assert not (tmp_path / "runs").exists()  # finding it creates nothing


def test_an_existing_project_registry_is_found_from_a_sub_folder(tmp_path, monkeypatch):
    db = _db(tmp_path)
    deep = tmp_path / "runs" / "leaf-disease" / "study" / "trial-0003"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    assert resolve_registry_uri() == f"sqlite:///{db.resolve()}"
    inner = _db(tmp_path / "sub")  # the nearest one wins
    assert resolve_registry_uri(cwd=tmp_path / "sub") == f"sqlite:///{inner.resolve()}"


def test_precedence_flag_then_run_config_then_environment_then_project(tmp_path, monkeypatch, cfg):
    monkeypatch.chdir(tmp_path)
    _db(tmp_path)
    plain, pinned = cfg(), cfg(registry={"uri": "sqlite:///pinned.db"})
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking:5000")
    assert locate_registry(run_uri=plain.registry.uri).uri == "http://tracking:5000"  # MLflow's convention
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", "http://registry:5000")
    assert locate_registry(run_uri=plain.registry.uri).uri == "http://registry:5000"
    monkeypatch.setenv("PLANTPHENO_REGISTRY_URI", "http://team:5000")
    location = locate_registry(run_uri=plain.registry.uri)
    assert (location.uri, location.source) == ("http://team:5000", "$PLANTPHENO_REGISTRY_URI")
    assert locate_registry(run_uri=pinned.registry.uri).uri == "sqlite:///pinned.db"
    assert locate_registry("http://flag:5000", run_uri=pinned.registry.uri).source == "--registry"
    assert resolve_registry_uri("http://flag:5000") == "http://flag:5000"


@pytest.mark.parametrize("output_dir", ["elsewhere", "runs/leaf/study"])
def test_a_runs_output_dir_and_tracking_uri_do_not_move_the_registry(tmp_path, monkeypatch, cfg, output_dir):
    monkeypatch.chdir(tmp_path)
    config = cfg(output_dir=str(tmp_path / output_dir), tracking={"mlflow": {"uri": "http://tracking:5000"}})
    assert resolve_registry_uri(run_uri=config.registry.uri) == resolve_registry_uri() == \
        f"sqlite:///{tmp_path.resolve()}/runs/mlflow.db"
