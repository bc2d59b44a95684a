"""Reading YAML written by people (configs, tuning files) within bounds.

``yaml.safe_load`` builds no objects but plain data, yet a few hundred bytes of nested aliases expand to
billions of values: a 316-byte config made a 312 MB error message, 948 MB of memory and 16 s (measured), one
more level did not finish. Here the parsed node graph is measured before anything is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from plantpheno.errors import ConfigError, clip

# A config or tuning file is a few KB. These bounds refuse a hostile one at once: YAML aliases can make a
# 316-byte file expand to 9^9 values (its validation error alone was 312 MB and took 16 s, measured).
MAX_YAML_BYTES = 1 << 20  # 1 MiB per file
MAX_YAML_VALUES = 100_000  # values after aliases are expanded


def read_yaml_mapping(path: Path, *, kind: str = "config file") -> dict[str, Any]:
    """A YAML file that must hold a mapping (empty file -> ``{}``); errors name the file."""
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise ConfigError(f"{kind} {path} {what}")
    try:
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            raise ConfigError(f"{kind} {path} is {size:,} bytes; a {kind} may hold at most {MAX_YAML_BYTES:,} bytes")
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{kind} {path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                          f"{exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{kind} {path} cannot be read ({exc.strerror or exc})") from None
    data = parse_yaml(text, what=f"{kind} {path}")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{kind} {path} must hold a mapping of fields, got {type(data).__name__}")
    return data


def parse_yaml(text: str, *, what: str) -> Any:
    """``yaml.safe_load`` within bounds: at most ``MAX_YAML_BYTES`` of text and ``MAX_YAML_VALUES`` values once
    aliases are expanded (counted on the parsed node graph before any value is built), no recursive aliases.

    Raises:
        ConfigError: naming ``what`` (e.g. "config file x.yaml").
    """
    if len(text) > MAX_YAML_BYTES:
        raise ConfigError(f"{what} is {len(text):,} characters long; at most {MAX_YAML_BYTES:,} are accepted")
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, what)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} is not valid YAML: {clip(str(exc), 2000)}") from None
    except RecursionError:
        raise ConfigError(f"{what} is nested too deeply to be a config") from None
    finally:
        loader.dispose()


def _check_expansion(root: yaml.Node, what: str) -> None:
    """Count the values ``root`` expands to (a node reached through N aliases counts N times) without expanding
    it: each distinct node is visited once, its expanded size summed from its children's."""
    sizes: dict[int, int] = {}
    entered: set[int] = set()  # nodes whose children are being counted: their ancestors on the current path
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        kids = _children(node)
        if children_done:
            entered.discard(key)
            sizes[key] = 1 + sum(sizes[id(kid)] for kid in kids)
            if sizes[key] > MAX_YAML_VALUES:
                raise ConfigError(f"{what} expands to more than {MAX_YAML_VALUES:,} values through YAML aliases "
                                  f"(line {node.start_mark.line + 1}); a config holds a few hundred")
            continue
        if key in sizes:
            continue
        if isinstance(node, yaml.MappingNode):
            _check_duplicate_keys(node, what)
        entered.add(key)
        stack.append((node, True))
        for kid in kids:
            if id(kid) in entered:
                raise ConfigError(f"{what}: a YAML alias refers to a value that contains it (line "
                                  f"{kid.start_mark.line + 1}); recursive values are not allowed")
            if id(kid) not in sizes:
                stack.append((kid, False))


def _check_duplicate_keys(node: yaml.MappingNode, what: str) -> None:
    """A key written twice in one mapping is an error: YAML loaders keep the last silently, so one of the two
    settings the user wrote would be ignored without a word. (``<<`` merge keys may repeat.)"""
    seen: dict[tuple[str, str], int] = {}
    for key, _ in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
            continue
        line = key.start_mark.line + 1
        if (key.tag, key.value) in seen:
            raise ConfigError(f"{what}: key {clip(repr(key.value), 80)} appears twice in one mapping (lines "
                              f"{seen[key.tag, key.value]} and {line}); keep one of them")
        seen[key.tag, key.value] = line


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []
