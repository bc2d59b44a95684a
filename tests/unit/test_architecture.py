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

# (importer part, imported part): never allowed
FORBIDDEN = [
    *((core, "cli") for core in ("data", "models", "training", "evaluation", "tracking", "registry", "tuning",
                                 "pipeline", "rundir", "runs", "reporting", "tasks", "config", "recipes", "api")),
    ("data", "models"), ("data", "training"),
    ("tracking", "training"),
    *((part, "tuning") for part in ("data", "models", "training", "evaluation", "tracking", "registry", "pipeline",
                                    "rundir", "runs", "reporting", "tasks", "config", "recipes", "api")),
    # budget mode is a client of train() at the tuning layer; only the API's train(budget=) and the CLI call it
    *((part, "budget") for part in ("data", "models", "training", "evaluation", "tracking", "registry", "pipeline",
                                    "rundir", "runs", "reporting", "tasks", "config", "recipes", "tuning")),
    ("budget", "cli"), ("budget", "tuning"), ("budget", "api"),
]
CORE = ("data", "models", "training", "evaluation", "tracking", "tuning", "budget", "registry", "pipeline.py", "rundir.py",
        "runs.py", "tasks.py", "config.py", "recipes", "distributed.py", "device.py", "api")


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _part(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every plantpheno module a file imports (at any level, also inside functions), with its line."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found += [(n, node.lineno) for n in names if n.startswith("plantpheno.")]
    return found


def _type_checking_lines(path: Path) -> set[int]:
    """Lines inside ``if TYPE_CHECKING:`` blocks (imports for annotations only)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def test_no_module_imports_across_a_forbidden_edge():
    broken = []
    for path in _modules():
        importer = _part(path)
        annotations_only = _type_checking_lines(path)
        for name, line in _imports(path):
            imported = name.split(".")[1]
            if (importer, imported) in FORBIDDEN and line not in annotations_only:
                broken.append(f"{path.relative_to(PACKAGE)}:{line} imports {name} ({importer} -> {imported})")
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize("module", ["plantpheno.rundir", "plantpheno.runs", "plantpheno.tasks", "plantpheno.reporting",
                                    "plantpheno.config", "plantpheno.recipes", "plantpheno.api"])
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


def test_run_file_names_live_only_in_rundir():
    names = ('"run.json"', '"config.yaml"', '"metrics.jsonl"', '"split.csv"', '"dataset.json"', '"environment.json"',
             '"best.pt"', '"last.pt"', '"training_curves.png"', '"bad_images.csv"', '"predictions.csv"', '"run.lock"',
             '"data_check.json"')
    found = []
    for path in _modules():
        if path.name == "rundir.py":
            continue
        text = path.read_text(encoding="utf-8")
        found += [f"{path.relative_to(PACKAGE)}: {n}" for n in names if n in text]
    assert not found, "\n".join(found)
