"""The house rules of shared/DESIGN.md, checked on the source: which part may import which, light modules stay
light, the core never prints, tuning uses only Optuna's public API."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import plantpheno

PACKAGE = Path(plantpheno.__file__).parent

# shared/DESIGN.md's layers, bottom to top. A module may import its own layer or any below it; an import deferred
# into a function counts the same (it hides a cycle, it does not remove it); imports under TYPE_CHECKING are free.
# Entries are module names relative to plantpheno: a package ("data") covers every module in it, unless a longer
# entry ("data.doctor") says otherwise. "__init__" is the package root (the facade re-exporting the API).
# A new package or root module goes into the row where it belongs (e.g. "labelling" beside "registry",
# "budget" beside "tuning"); one the table does not know fails test_every_module_has_a_layer.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("errors", "version", "tasks", "check_ids", "files", "reporting", "records")),
    ("config", ("config", "recipes", "band_config")),
    ("run folder and device", ("run", "device", "distributed")),
    ("data", ("data",)),
    ("models", ("models",)),
    ("evaluation, tracking", ("evaluation", "tracking")),
    ("training", ("training",)),
    ("registry", ("registry",)),
    ("pipeline", ("pipeline", "labelling", "parent_model", "source_eval")),
    ("api, tuning", ("api", "tuning", "budget", "__init__")),
    ("cli", ("cli", "__main__")),
]
# Edges the layers allow but DESIGN.md's house rules do not: tuning is a client of train(), not a layer under it.
NEVER = [("api", "tuning"), ("__init__", "tuning"), ("budget", "tuning"), ("budget", "api")]
CORE = ("data", "models", "training", "evaluation", "tracking", "tuning", "budget", "registry", "pipeline.py", "run",
        "files", "records", "tasks.py", "check_ids.py", "version.py", "config.py", "recipes", "distributed.py",
        "device.py", "api", "labelling")


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _name(path: Path) -> str:
    """``data/doctor/check.py`` -> ``data.doctor.check``; a package's ``__init__.py`` is the package's name."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return "__init__" if parts == ("__init__",) else ".".join(p for p in parts if p != "__init__")


MODULES = {_name(path): path for path in _modules()}


def _entry(module: str) -> str | None:
    """The LAYERS entry that covers ``module`` (the longest matching package), or None."""
    entries = [e for _, row in LAYERS for e in row if module == e or module.startswith(e + ".")]
    return max(entries, key=len, default=None)


def _layer(module: str) -> int | None:
    entry = _entry(module)
    return next((i for i, (_, row) in enumerate(LAYERS) if entry in row), None)


def _type_checking_lines(tree: ast.Module) -> set[int]:
    """Lines inside ``if TYPE_CHECKING:`` blocks (imports for annotations only)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every plantpheno module a file imports at run time (at any level, also inside functions), with its line,
    as a name relative to plantpheno ("__init__" for the package root).

    ``from plantpheno.x import y`` imports ``x.y`` when that is a module, else ``x``. The parent packages Python
    initialises on the way are not counted: every module would then depend on the facade in ``__init__``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    annotations_only = _type_checking_lines(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names]
            names = [n if _relative(n) in MODULES else node.module for n in names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        if node.lineno not in annotations_only:
            found += [(_relative(n), node.lineno) for n in dict.fromkeys(names) if n.split(".")[0] == "plantpheno"]
    return found


def _relative(name: str) -> str:
    return "__init__" if name == "plantpheno" else name.removeprefix("plantpheno.")


def _dotted(module: str) -> str:
    return "plantpheno" if module == "__init__" else f"plantpheno.{module}"


def _graph() -> dict[str, dict[str, int]]:
    """module -> {imported module: line of the first such import}, plantpheno modules only."""
    graph: dict[str, dict[str, int]] = {}
    for module, path in MODULES.items():
        edges = graph.setdefault(module, {})
        for name, line in _imports(path):
            if name in MODULES and name != module:
                edges.setdefault(name, line)
    return graph


def test_every_module_has_a_layer():
    unknown = [str(MODULES[m].relative_to(PACKAGE)) for m in MODULES if _layer(m) is None]
    assert not unknown, (f"modules in no layer: {unknown}; add their package (or module) to the row of LAYERS in "
                         f"tests/unit/test_architecture.py where it belongs (shared/DESIGN.md, Layers)")


def test_modules_import_only_their_own_layer_or_below():
    broken = []
    for module, path in MODULES.items():
        layer = _layer(module)
        for name, line in _imports(path):
            imported = _layer(name)
            if layer is None or imported is None:
                continue  # test_every_module_has_a_layer names it
            if imported > layer or (_entry(module), _entry(name)) in NEVER:
                broken.append(f"{path.relative_to(PACKAGE)}:{line} imports {_dotted(name)} "
                              f"({LAYERS[layer][0]} -> {LAYERS[imported][0]})")
    assert not broken, "imports above their layer (shared/DESIGN.md, Layers):\n" + "\n".join(broken)


def _cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search)."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        path.append(node)
        for nxt in sorted(graph.get(node, {})):
            if nxt in path:
                return path[path.index(nxt):] + [nxt]
            if nxt not in done and (found := visit(nxt)):
                return found
        path.pop()
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done and (found := visit(start)):
            return found
    return None


def test_no_import_cycle_between_modules():
    graph = _graph()
    cycle = _cycle(graph)
    steps = [f"{MODULES[a].relative_to(PACKAGE)}:{graph[a][b]} imports {_dotted(b)}"
             for a, b in zip(cycle or [], (cycle or [])[1:])]
    assert cycle is None, "import cycle (deferred imports count, TYPE_CHECKING imports do not):\n" + "\n".join(steps)


def test_the_checks_find_a_cycle_an_unknown_package_and_a_module_of_a_known_one():
    assert _cycle({"a": {"b": 3}, "b": {"c": 7}, "c": {"a": 12}, "d": {"a": 1}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b": 1}, "b": {}, "c": {"a": 2}, "d": {"b": 5}}) is None
    assert _layer("someday.queue") is None  # a new package: test_every_module_has_a_layer asks to place it
    assert _layer("evaluation.ood") == _layer("evaluation")  # a new module takes its package's row
    assert _layer("config") < _layer("run.folder") < _layer("data.doctor.check") < _layer("cli.predict_cmd")


def test_import_names_resolve_to_modules_and_type_checking_imports_are_free(tmp_path):
    source = tmp_path / "example.py"
    source.write_text("from typing import TYPE_CHECKING\nfrom plantpheno import distributed, __version__\n"
                      "if TYPE_CHECKING:\n    from plantpheno.pipeline import RunResult\n"
                      "def f():\n    import plantpheno.cli.models_cmd as m\n"
                      "    from plantpheno.errors import DataError\n")
    assert _imports(source) == [("distributed", 2), ("__init__", 2), ("cli.models_cmd", 6), ("errors", 7)]


def test_config_imports_nothing_above_it():
    above = [f"config.py:{line} imports {_dotted(name)}" for name, line in _imports(MODULES["config"])
             if (_layer(name) or 0) > _layer("config")]  # a module in no layer: test_every_module_has_a_layer
    assert not above, "\n".join(above)


@pytest.mark.parametrize("module", ["plantpheno.version", "plantpheno.check_ids", "plantpheno.run.folder",
                                    "plantpheno.run.listing", "plantpheno.tasks", "plantpheno.reporting",
                                    "plantpheno.config", "plantpheno.recipes", "plantpheno.api",
                                    "plantpheno.records.model_meta", "plantpheno.records.evaluation"])
def test_light_modules_do_not_import_torch(module):
    code = f"import sys, {module}; print('torch' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "False", f"importing {module} loads torch"


def test_core_modules_do_not_print():
    """Messages from the core go through an injected reporter; the command line prints."""
    offenders = []
    for path in _modules():
        rel = path.relative_to(PACKAGE)
        if not rel.parts[0] in CORE:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                offenders.append(f"{rel}:{node.lineno}")
    assert not offenders, f"print() in core modules: {offenders}"


def test_tuning_uses_only_public_optuna_names():
    private = []
    for path in sorted((PACKAGE / "tuning").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                owner = ast.unparse(node.value)
                if owner not in ("self", "cls") and not owner.startswith("self."):
                    private.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("optuna"):
                private += [f"{path.name}:{node.lineno} {node.module}.{a.name}" for a in node.names
                            if a.name.startswith("_") or "._" in node.module]
    assert not private, "\n".join(private)


def test_run_file_names_live_only_in_the_run_folder_module():
    names = ('"run.json"', '"config.yaml"', '"metrics.jsonl"', '"split.csv"', '"dataset.json"', '"environment.json"',
             '"best.pt"', '"last.pt"', '"training_curves.png"', '"bad_images.csv"', '"predictions.csv"', '"run.lock"',
             '"data_check.json"')
    found = []
    for path in _modules():
        if path.relative_to(PACKAGE).as_posix() == "run/folder.py":
            continue
        text = path.read_text(encoding="utf-8")
        found += [f"{path.relative_to(PACKAGE)}: {n}" for n in names if n in text]
    assert not found, "\n".join(found)
