"""``plantpheno config show CONFIG [overrides]``, ``config docs``, ``config list`` and ``config init RECIPE [PATH]``."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="list the recipes, write one out to edit, show a resolved config, "
                                      "or document every field")
    config_sub = p.add_subparsers(dest="config_command", required=True, metavar="CONFIG_COMMAND")
    show = config_sub.add_parser("show", help="validate a config and print it with every default filled in")
    show.add_argument("config", type=Path, help="YAML config file or recipe name (see `plantpheno config list`)")
    show.add_argument("overrides", nargs="*", metavar="key.sub=value")
    show.set_defaults(func=run_show)
    docs = config_sub.add_parser("docs", help="print a markdown table of every config field")
    docs.set_defaults(func=run_docs)
    listing = config_sub.add_parser("list", help="name the packaged recipes, each with what it is for")
    listing.set_defaults(func=run_list)
    init = config_sub.add_parser("init", help="write a packaged recipe to a file to edit",
                                 description="Write recipe RECIPE to PATH (default ./RECIPE.yaml; a folder gets "
                                             "RECIPE.yaml in it), comments included, to edit and train with "
                                             "`plantpheno train PATH`. An existing file is kept unless --force.")
    init.add_argument("recipe", metavar="RECIPE", help="a recipe name from `plantpheno config list`")
    init.add_argument("path", nargs="?", type=Path, default=None, metavar="PATH")
    init.add_argument("--force", action="store_true", help="replace an existing file at PATH")
    init.set_defaults(func=run_init)


def run_show(args: argparse.Namespace) -> int:
    from plantpheno.config import config_to_yaml, load_config

    print(config_to_yaml(load_config(args.config, args.overrides)), end="")
    return 0


def config_table() -> str:
    """Markdown table of all config fields (the docs site generates its configuration reference from it: docs/hooks.py)."""
    from plantpheno.config import field_docs

    rows = ["| field | type | default | meaning |", "|---|---|---|---|"]
    for name, type_name, default, description in field_docs():
        cell = type_name.replace("|", "\\|")
        rows.append(f"| `{name}` | {cell} | `{default}` | {description} |")
    return "\n".join(rows)


def run_docs(args: argparse.Namespace) -> int:
    print(config_table())
    return 0


def run_list(args: argparse.Namespace) -> int:
    from plantpheno.errors import ConfigError
    from plantpheno.recipes import RECIPES_DIR, list_recipes

    recipes = list_recipes()
    if not recipes:
        raise ConfigError(f"no recipes in {RECIPES_DIR}: this installation of plantpheno is incomplete "
                          f"(its wheel was built without package data); reinstall it")
    width = max(len(r.name) for r in recipes)
    for recipe in recipes:
        print(f"{recipe.name:<{width}}  {recipe.summary}")
    print("\ntrain one: plantpheno train RECIPE data.root=FOLDER; write one out to edit: "
          "plantpheno config init RECIPE [PATH]")
    return 0


def run_init(args: argparse.Namespace) -> int:
    from plantpheno.recipes import find_recipe, write_recipe

    target = write_recipe(args.recipe, args.path, force=args.force)
    recipe = find_recipe(args.recipe)
    use = "plantpheno tune CONFIG" if recipe is not None and recipe.kind == "space" else "plantpheno train"
    print(f"wrote {target} (recipe {args.recipe}); edit it, then: {use} {target}")
    return 0
