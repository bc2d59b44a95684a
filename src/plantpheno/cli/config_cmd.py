"""``plantpheno config show CONFIG [overrides]`` and ``plantpheno config docs``."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="show a resolved config, or document every field")
    config_sub = p.add_subparsers(dest="config_command", required=True, metavar="CONFIG_COMMAND")
    show = config_sub.add_parser("show", help="validate a config and print it with every default filled in")
    show.add_argument("config", type=Path)
    show.add_argument("overrides", nargs="*", metavar="key.sub=value")
    show.set_defaults(func=run_show)
    docs = config_sub.add_parser("docs", help="print a markdown table of every config field")
    docs.set_defaults(func=run_docs)


def run_show(args: argparse.Namespace) -> int:
    from plantpheno.config import config_to_yaml, load_config

    print(config_to_yaml(load_config(args.config, args.overrides)), end="")
    return 0


def config_table() -> str:
    """Markdown table of all config fields (the README embeds this; a test keeps them equal)."""
    from plantpheno.config import field_docs

    rows = ["| field | type | default | meaning |", "|---|---|---|---|"]
    for name, type_name, default, description in field_docs():
        cell = type_name.replace("|", "\\|")
        rows.append(f"| `{name}` | {cell} | `{default}` | {description} |")
    return "\n".join(rows)


def run_docs(args: argparse.Namespace) -> int:
    print(config_table())
    return 0
