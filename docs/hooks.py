"""MkDocs hooks: the configuration and command-line references are generated from the code at build time.

A page that holds a marker line gets the generated text in its place, so no committed copy can go stale:

- ``<!-- generated: config-table -->`` becomes ``plantpheno.cli.config_cmd.config_table()``, the table that
  ``plantpheno config docs`` prints (one row per field of the pydantic schema);
- ``<!-- generated: cli-reference -->`` becomes the ``--help`` of ``plantpheno`` and of every subcommand, walked
  from ``plantpheno.cli.build_parser()``;
- ``<!-- generated: python-api-example -->`` becomes the marked block of ``examples/python_api.py`` (the script CI
  runs, and the README's example).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
CONFIG_MARKER = "<!-- generated: config-table -->"
CLI_MARKER = "<!-- generated: cli-reference -->"
EXAMPLE_MARKER = "<!-- generated: python-api-example -->"
EXAMPLE = SRC.parent / "examples" / "python_api.py"
HELP_WIDTH = "100"  # argparse wraps at $COLUMNS: fixed, so the page does not depend on the terminal


def _import_plantpheno() -> None:
    """The sources next to this file come first (a checkout that is not installed still builds its own docs)."""
    if str(SRC) not in sys.path:
        sys.path.insert(0, str(SRC))


def config_reference() -> str:
    _import_plantpheno()
    from plantpheno.cli.config_cmd import config_table

    return _escape_html(config_table())


def _escape_html(markdown: str) -> str:
    """``<`` and ``>`` outside code spans as entities: Markdown would read ``OUTPUT_DIR/<experiment>`` as a tag."""
    parts = markdown.split("`")
    for i in range(0, len(parts), 2):  # even parts lie outside backticks
        parts[i] = parts[i].replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts)


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    """Every (name, parser) below ``parser``, depth first, in the order the CLI registers them."""
    found: list[tuple[str, argparse.ArgumentParser]] = []
    for action in parser._actions:  # argparse keeps subparsers only here; it has no public accessor
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found.append((name, child))
                found.extend((f"{name} {sub}", p) for sub, p in _subcommands(child))
    return found


def cli_reference() -> str:
    import os

    _import_plantpheno()
    from plantpheno.cli import build_parser

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_WIDTH
    try:
        parser = build_parser()
        sections = [f"## `plantpheno`\n\n```text\n{parser.format_help().rstrip()}\n```"]
        for name, child in _subcommands(parser):
            sections.append(f"## `plantpheno {name}`\n\n```text\n{child.format_help().rstrip()}\n```")
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old
    return "\n\n".join(sections)


def python_api_example() -> str:
    script = EXAMPLE.read_text()
    start = script.index("\n", script.index("# --- the README's example")) + 1
    code = script[start:script.index("# --- end of the README's example ---")].strip()
    return f"```python\n{code}\n```"


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001 (MkDocs' hook signature)
    if CONFIG_MARKER in markdown:
        markdown = markdown.replace(CONFIG_MARKER, config_reference())
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_reference())
    if EXAMPLE_MARKER in markdown:
        markdown = markdown.replace(EXAMPLE_MARKER, python_api_example())
    return markdown
