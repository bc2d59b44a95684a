"""The README stays true and short: its set-up commands, its Python example, its links, its length.

The configuration reference now lives in the docs site, generated from the schema when it is built
(tests/integration/test_docs.py checks that it lists every field `plantpheno config docs` lists);
tests/integration/test_readme_quickstart.py runs the README's quick start as written."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()
CI = (REPO / ".ci" / "run").read_text()
MAX_LINES = 250


def test_readme_opens_with_exactly_two_setup_commands_and_ci_runs_the_whole_suite():
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", README, re.S)
    assert block is not None
    commands = [ln for ln in block.group(1).splitlines() if ln.strip() and not ln.startswith("#")]
    assert commands == ["make demo", "make test"]
    assert "make test" in CI  # `make test` or `make test-all`: CI runs the suite the README names
    assert "`make test-all`" in README and "CI" in README, "README must say make test-all is the whole suite CI runs"


def test_readme_fits_on_a_screen_or_two():
    assert len(README.splitlines()) <= MAX_LINES


def test_readme_python_api_example_is_the_example_script_that_ci_runs():
    """tests/integration/test_api_end_to_end.py runs examples/python_api.py; the README shows the same code."""
    script = (REPO / "examples" / "python_api.py").read_text()
    start = script.index("\n", script.index("# --- the README's example")) + 1
    example = script[start:script.index("# --- end of the README's example ---")].strip()
    section = README[README.index("## Python API"):]
    block = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert block is not None and block.group(1).strip() == example


def test_readme_links_and_picture_point_at_files_that_exist():
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README) + re.findall(r'<img src="([^"]+)"', README)
    local = [t for t in targets if not re.match(r"[a-z]+://", t)]
    assert local, "the README links into the docs"
    missing = [t for t in local if not (REPO / t).exists()]
    assert not missing, f"README links to missing files: {missing}"
    picture = REPO / "docs" / "assets" / "report.png"
    assert picture.stat().st_size < 150_000, "keep the README's picture small"


def test_every_figure_in_the_readme_names_its_machine():
    """A paragraph that gives a time or an accuracy says on which machine it was measured."""
    for paragraph in re.split(r"\n\s*\n", README):
        if "```" in paragraph or paragraph.startswith("|"):
            continue
        if re.search(r"\d+(\.\d+)? ?(s|%)\b", paragraph) and re.search(r"\bin \d+ ?s\b|CPU-seconds", paragraph):
            assert re.search(r"\bcores?\b|Xeon|EPYC|\bGPU|H100", paragraph), paragraph[:200]
