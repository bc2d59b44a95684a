"""`make test` is the fast selection and keeps the first-run smoke test; `make test-all`, which CI runs, is the
whole suite. The e2e mark comes from tests/conftest.py by folder and mark, so this checks it on real test files."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _recipe(target: str) -> str:
    makefile = (REPO / "Makefile").read_text()
    match = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert match, f"no {target} target in the Makefile"
    return match.group(1)


def test_make_test_runs_the_fast_selection_and_ci_runs_the_whole_suite():
    assert re.search(r'-m pytest -m "not e2e"\s*$', _recipe("test"), re.M), _recipe("test")
    assert re.search(r"-m pytest\s*$", _recipe("test-all"), re.M), _recipe("test-all")
    ci = [line.split("#")[0].strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert "make test-all" in ci


def test_the_fast_selection_keeps_the_smoke_run_and_no_end_to_end_test():
    paths = ["tests/smoke", "tests/integration/test_cli.py", "tests/hostile/test_names.py", "tests/unit/test_readme.py"]
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                             "-m", "not e2e", *paths], cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    selected = [line for line in result.stdout.splitlines() if "::" in line]
    assert any(line.startswith("tests/smoke/test_first_run.py::") for line in selected), selected
    assert any(line.startswith("tests/unit/test_readme.py::") for line in selected), selected
    assert not [line for line in selected if line.startswith(("tests/integration/", "tests/hostile/"))], selected
    assert re.search(r"\d+ deselected", result.stdout), result.stdout[-500:]  # the other two files' tests
