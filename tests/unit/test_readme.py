"""The README stays true: its set-up commands, and the config reference generated from the schema."""

from __future__ import annotations

import re
from pathlib import Path

from plantpheno.cli.config_cmd import config_table

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
CI = (Path(__file__).resolve().parents[2] / ".ci" / "run").read_text()


def test_readme_opens_with_exactly_two_setup_commands_and_ci_runs_the_second():
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", README, re.S)
    assert block is not None
    commands = [ln for ln in block.group(1).splitlines() if ln.strip() and not ln.startswith("#")]
    assert commands == ["make demo", "make test"]
    assert "make test" in CI


def test_readme_documents_every_config_field():
    assert config_table() in README, "README config reference is stale: paste `plantpheno config docs`"


def test_readme_python_api_example_is_the_example_script_that_ci_runs():
    """tests/integration/test_api_end_to_end.py runs examples/python_api.py; the README shows the same code."""
    script = (Path(__file__).resolve().parents[2] / "examples" / "python_api.py").read_text()
    start = script.index("\n", script.index("# --- the README's example")) + 1
    example = script[start:script.index("# --- end of the README's example ---")].strip()
    section = README[README.index("## Python API"):]
    block = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert block is not None and block.group(1).strip() == example
