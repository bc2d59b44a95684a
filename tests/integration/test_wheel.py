"""A wheel built from the repository, installed into a fresh virtual environment, runs the quick start in an empty
folder: the recipes come with the package (`config list`, `config init`, `train demo`), and nothing is read from
the repository.

The fresh environment gets the wheel with ``pip install --no-deps --no-index`` (nothing is downloaded) and finds
the dependencies (torch, timm, ...) through a ``.pth`` line naming the test interpreter's site-packages. That line
comes after the environment's own site-packages, and a plain path line does not run the ``.pth`` files of the
folder it names, so the editable install of the repository there (``__editable__.plantpheno*.pth``) stays out:
the test asserts that ``import plantpheno`` finds the wheel's copy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> str:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, argv))} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _build_wheel(tmp: Path, env: dict[str, str]) -> Path:
    """Build from a copy of what a wheel is made of, so the repository gets no build/ or .egg-info."""
    source = tmp / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    dist = tmp / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "--quiet",
          "--wheel-dir", str(dist), str(source)], tmp, env)
    (wheel,) = dist.glob("plantpheno-*.whl")
    return wheel


def _fresh_env(tmp: Path, wheel: Path, env: dict[str, str]) -> Path:
    """A new virtual environment with the wheel installed and the test interpreter's packages importable."""
    target = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(target)
    python = target / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp, env)
                .strip())
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "--quiet",
          str(wheel)], tmp, env)
    (site / "zz_shared_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return target


def test_a_wheel_in_a_fresh_environment_runs_the_quick_start_in_an_empty_folder(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", MPLBACKEND="Agg", PIP_DISABLE_PIP_VERSION_CHECK="1")
    wheel = _build_wheel(tmp_path, env)
    target = _fresh_env(tmp_path, wheel, env)
    work = tmp_path / "empty"
    work.mkdir()
    python, cli = str(target / "bin" / "python"), str(target / "bin" / "plantpheno")

    where = _run([python, "-c", "import plantpheno, plantpheno.recipes as r; print(plantpheno.__file__); "
                                "print(r.RECIPES_DIR)"], work, env).split()
    assert all(Path(p).is_relative_to(target) for p in where), f"plantpheno imported from {where}, not the wheel"
    assert not Path(where[0]).is_relative_to(REPO)

    listing = _run([cli, "config", "list"], work, env)
    for name in ("classify", "classify_full", "classify_scratch", "traits", "traits_full", "demo", "tune/demo_space"):
        assert f"\n{name} " in f"\n{listing}", f"{name} missing from `plantpheno config list`:\n{listing}"
    _run([cli, "config", "init", "classify"], work, env)
    assert (work / "classify.yaml").read_text() == (REPO / "src/plantpheno/recipes/classify.yaml").read_text()
    assert "backbone: tf_efficientnet_lite0" in _run([cli, "config", "show", "classify"], work, env)

    # the quick start, small: the recipe by name, data made here
    _run([cli, "data", "synth", "leaves", "--per-class", "12", "--image-size", "48", "--seed", "0"], work, env)
    out = _run([cli, "train", "demo", "training.epochs=2", "data.image_size=48", "training.progress_bar=false",
                "evaluation.bootstrap_samples=100"], work, env)
    run_dir = Path(out.strip().splitlines()[-1].removeprefix("run directory: "))
    assert run_dir.is_relative_to(Path("runs", "demo")) and (work / run_dir / "report.html").is_file(), out
    assert "accuracy" in _run([cli, "evaluate", str(run_dir), "--split", "val"], work, env)
    _run([cli, "report", str(run_dir)], work, env)
    predictions = _run([cli, "predict", str(run_dir), "leaves/rust"], work, env)
    assert len(predictions.strip().splitlines()) == 1 + 12, predictions
    assert sorted(p.name for p in work.iterdir()) == ["classify.yaml", "leaves", "runs"]
