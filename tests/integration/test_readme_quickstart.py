"""The README's quick start runs as written: its shell blocks under "Quick start" and "A CSV of traits" are
extracted and run line by line in an empty folder, with `plantpheno` on PATH meaning this checkout."""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow

SECTIONS = ("## Quick start", "## A CSV of traits")


def readme_commands(section: str) -> list[str]:
    """The command lines of the shell blocks in one README section (comments and blank lines left out)."""
    readme = (REPO / "README.md").read_text()
    start = readme.index(section)
    end = readme.find("\n## ", start + 1)
    body = readme[start:end if end > 0 else None]
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", body, re.S):
        lines += [ln for ln in block.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert lines, f"no shell block under {section!r}"
    return lines


@pytest.fixture
def shell_env(tmp_path: Path) -> dict[str, str]:
    """`plantpheno` on PATH runs this interpreter on this checkout's sources, as an installed script would."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "plantpheno"
    script.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m plantpheno "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}


def run_as_written(lines: list[str], cwd: Path, env: dict[str, str]) -> None:
    for line in lines:
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", line], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=1800)
        assert done.returncode == 0, f"README command failed ({done.returncode}): {line}\n{done.stderr[-3000:]}"


def test_quick_start_on_a_folder_of_images_runs_as_written(tmp_path, shell_env):
    work = tmp_path / "empty"
    work.mkdir()
    run_as_written(readme_commands(SECTIONS[0]), work, shell_env)
    run = work / "runs" / "leaves" / "first"
    assert (run / "report.html").is_file()
    metrics = json.loads((run / "eval" / "test" / "metrics.json").read_text())
    assert "confidence_interval" in metrics
    assert (run / "eval" / "val" / "metrics.json").is_file()
    with open(work / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(list((work / "leaves" / "rust").iterdir()))


def test_quick_start_on_a_csv_of_traits_runs_as_written(tmp_path, shell_env):
    work = tmp_path / "empty"
    work.mkdir()
    run_as_written(readme_commands(SECTIONS[1]), work, shell_env)
    metrics = json.loads((work / "runs" / "rosettes" / "first" / "eval" / "test" / "metrics.json").read_text())
    assert "mae" in metrics
