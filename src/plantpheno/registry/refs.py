"""Model names and references: ``NAME``, ``NAME@alias``, ``NAME/version`` — validated, never a path."""

from __future__ import annotations

import re
from dataclasses import dataclass

from plantpheno.errors import RegistryError

# \Z, not $: '$' also matches before a final newline, so "model\n" passed as a name
_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
_ALIAS = re.compile(r"\A[A-Za-z][A-Za-z0-9_-]{0,63}\Z")


def check_name(name: str) -> str:
    """A model name: letters, digits, ``.``, ``_``, ``-``; no slashes, no ``..`` (it may end up in paths)."""
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise RegistryError(f"model name {name!r} is invalid: use 1-128 letters, digits, '.', '_' or '-', starting "
                            f"with a letter or digit (no '/', no '..')")
    return name


def check_alias(alias: str) -> str:
    if (not isinstance(alias, str) or not _ALIAS.match(alias) or alias.lower() == "latest"
            or re.fullmatch(r"v[0-9]+", alias)):
        raise RegistryError(f"alias {alias!r} is invalid: use a letter then letters, digits, '_' or '-' "
                            f"(not 'latest' or 'v<number>', which MLflow reserves)")
    return alias


@dataclass(frozen=True)
class ModelRef:
    """A registered model, optionally pinned to a version or an alias (neither = the latest version)."""

    name: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.alias:
            return f"{self.name}@{self.alias}"
        return f"{self.name}/{self.version}" if self.version is not None else self.name


def parse_ref(text: str) -> ModelRef:
    """``NAME``, ``NAME@alias`` or ``NAME/version``."""
    if "@" in text:
        name, alias = text.split("@", 1)
        return ModelRef(check_name(name), alias=check_alias(alias))
    if "/" in text:
        name, version = text.split("/", 1)
        if not re.fullmatch(r"[0-9]{1,18}", version) or int(version) < 1:  # isdigit() also passes '²'
            raise RegistryError(f"model reference {text!r}: the version after '/' must be a number >= 1")
        return ModelRef(check_name(name), version=int(version))
    return ModelRef(check_name(text))
