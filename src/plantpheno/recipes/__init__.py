"""Recipes: the YAML configs that ship inside the package, found by name.

A recipe is a training config (``classify``, ``traits``, ``demo``...) or a tuning search space
(``tune/demo_space``) stored next to this module, so an installed wheel carries them. Wherever a command or
:func:`plantpheno.load_config` takes a config file, it takes a recipe name too: :func:`resolve` decides,
in one place, which one a value means. A file that exists wins, so a user's own ``classify.yaml`` (written
by ``plantpheno config init classify``) is read, not the packaged one.

Each recipe's first comment line says what it is for (``plantpheno config list`` prints it); the lines after
it say how long it took on which machine and what it reached.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from plantpheno.files.atomic import atomic_write_text
from plantpheno.errors import ConfigError

RECIPES_DIR = Path(__file__).resolve().parent
SPACE_FOLDER = "tune"  # search spaces live in recipes/tune/ and are named tune/<name>
Kind = Literal["config", "space"]
_SUFFIXES = (".yaml", ".yml")
# the files under configs/ that the recipes replaced (plantpheno 0.1 and the repository before issue 28):
# an old path still typed from habit gets the new name in its error
RENAMED = {"plantvillage_pretrained": "classify", "folder_classification": "classify_full",
           "plantvillage": "classify_scratch", "trait_pretrained": "traits", "trait_regression": "traits_full",
           "demo": "demo", "demo_space": "tune/demo_space"}


@dataclass(frozen=True)
class Recipe:
    """One packaged recipe: its name (``classify``, ``tune/demo_space``), file, kind and one-line summary."""

    name: str
    path: Path
    kind: Kind

    @property
    def summary(self) -> str:
        """The recipe's first comment line: what it is for."""
        for line in self.path.read_text(encoding="utf-8").splitlines():
            if line.startswith("#"):
                return line.lstrip("#").strip()
        return ""


def list_recipes() -> list[Recipe]:
    """Every packaged recipe, training configs first, each group by name."""
    configs = [Recipe(p.stem, p, "config") for p in sorted(RECIPES_DIR.glob("*.yaml"))]
    spaces = [Recipe(f"{SPACE_FOLDER}/{p.stem}", p, "space")
              for p in sorted((RECIPES_DIR / SPACE_FOLDER).glob("*.yaml"))]
    return configs + spaces


def find_recipe(name: str | os.PathLike[str]) -> Recipe | None:
    """The recipe called ``name`` (with or without ``.yaml``), or None."""
    text = os.fspath(name).replace("\\", "/")
    for suffix in _SUFFIXES:
        text = text.removesuffix(suffix)
    return next((r for r in list_recipes() if r.name == text), None)


def resolve(value: str | os.PathLike[str], *, kind: Kind = "config") -> Path:
    """The file ``value`` means: an existing file is itself; else a recipe name is the packaged recipe.

    Args:
        value: a path, or a recipe name such as ``classify`` or ``tune/demo_space.yaml``.
        kind: ``config`` for a training config, ``space`` for a tuning file; a recipe of the other kind is refused.

    Raises:
        ConfigError: the value is neither an existing file nor a recipe name (the message lists the recipes),
            or it names a recipe of the other kind.
    """
    path = Path(value)
    if path.is_file():
        return path
    recipe = find_recipe(value)
    if recipe is not None:
        if recipe.kind != kind:
            raise ConfigError(_wrong_kind(recipe, kind))
        return recipe.path
    if path.exists():  # a folder: the reader says so, naming it
        return path
    what = "tuning file" if kind == "space" else "config file"
    raise ConfigError(f"{what} {value} does not exist, and {path.name!r} is not a recipe name{_renamed_hint(path)}; "
                      f"{_known(kind)}")


def write_recipe(name: str, path: str | os.PathLike[str] | None = None, *, force: bool = False) -> Path:
    """Write recipe ``name`` to ``path`` to edit (default ``./<name>.yaml``; a folder gets ``<name>.yaml`` in it).

    Raises:
        ConfigError: an unknown name (listing the recipes), or a file already there and ``force`` not given.
        StorageError: the file cannot be written.
    """
    recipe = find_recipe(name)
    if recipe is None:
        raise ConfigError(f"{name!r} is not a recipe name; {_known(None)}")
    file_name = recipe.path.name
    target = Path(path) if path is not None else Path(file_name)
    if target.is_dir():
        target = target / file_name
    if target.is_symlink() or (target.exists() and not target.is_file()):
        raise ConfigError(f"{target} exists and is not a regular file; give another PATH")
    if target.exists() and not force:
        raise ConfigError(f"{target} already exists; give another PATH, or --force to replace it")
    atomic_write_text(target, recipe.path.read_text(encoding="utf-8"))
    return target


def _known(kind: Kind | None) -> str:
    names = [r.name for r in list_recipes() if kind is None or r.kind == kind]
    noun = {"config": "the training recipes", "space": "the search-space recipes", None: "the recipes"}[kind]
    return f"{noun} are: {', '.join(names)} (`plantpheno config list` says what each is for)"


def _wrong_kind(recipe: Recipe, kind: Kind) -> str:
    if recipe.kind == "space":
        return (f"recipe {recipe.name} is a search space for `plantpheno tune CONFIG SPACE`, not a training config; "
                f"{_known('config')}")
    return f"recipe {recipe.name} is a training config, not a search space (a tuning file); {_known('space')}"


def _renamed_hint(path: Path) -> str:
    new = RENAMED.get(path.name.removesuffix(".yml").removesuffix(".yaml"))
    return f" (configs/{path.name} is now the recipe {new})" if new and path.parent.name == "configs" else ""
