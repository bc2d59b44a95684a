"""The data checks in an environment without scikit-learn and cleanlab (the `doctor` extra): every check but the
label-error one runs, and asking for the label errors ends in one message naming the libraries and their
licences. The environment is real: a Python started without site-packages, given every installed package except
those two (a folder of links), and this checkout's sources."""

from __future__ import annotations

import os
import site
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO

LEFT_OUT = ("sklearn", "scikit_learn", "cleanlab")


@pytest.fixture(scope="module")
def without_doctor(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder that holds a link to every entry of the site-packages except scikit-learn and cleanlab."""
    folder = tmp_path_factory.mktemp("site-without-doctor")
    for packages in site.getsitepackages():
        for entry in Path(packages).iterdir():
            if entry.name.lower().startswith(LEFT_OUT) or entry.suffix == ".pth":
                continue
            if not (folder / entry.name).exists():
                (folder / entry.name).symlink_to(entry)
    return folder


def run_isolated(folder: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(folder)]), "PYTHONNOUSERSITE": "1"}
    return subprocess.run([sys.executable, "-S", "-m", "plantpheno", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_the_isolated_python_has_no_sklearn_or_cleanlab(without_doctor, tmp_path):
    code = "import importlib.util as u; print([u.find_spec(n) is None for n in ('sklearn', 'cleanlab', 'torch')])"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(without_doctor)])}
    done = subprocess.run([sys.executable, "-S", "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[True, True, False]", done.stderr


def test_data_checks_run_without_the_doctor_extra(without_doctor, tmp_path, disease_root):
    config = tmp_path / "check.yaml"
    config.write_text(yaml.safe_dump({"data": {"root": str(disease_root)}, "output_dir": str(tmp_path / "runs")}))
    done = run_isolated(without_doctor, tmp_path, "data", "check", str(config), "data.checks.label_errors=auto")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "data check of 64 images" in done.stdout + done.stderr

    asked = run_isolated(without_doctor, tmp_path, "data", "check", str(config), "--label-errors")
    assert asked.returncode == 2, asked.stdout + asked.stderr
    message = asked.stderr.strip()
    assert "Traceback" not in message and len(message.splitlines()) == 1, message
    for needed in ("scikit-learn", "cleanlab", "AGPL-3.0", "plantpheno[doctor]", "every other data check runs"):
        assert needed in message, needed
