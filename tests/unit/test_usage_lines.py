"""Every ``plantpheno`` command shown in the README's and the docs' shell blocks and in the packaged recipes' comments
parses, and
every ``plantpheno tune`` one runs (as a dry run); ``key=value`` overrides may stand anywhere on a command line."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from plantpheno.cli import build_parser, main, parse_args
from plantpheno.recipes import RECIPES_DIR

REPO = Path(__file__).resolve().parents[2]


def _usage_lines() -> list[tuple[str, str]]:
    """(where, command) for each plantpheno command in the shell blocks of README and docs/, and in the recipes'
    comments."""
    found = []
    for page in [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]:
        where = page.relative_to(REPO).as_posix()
        for block in re.findall(r"```(?:bash|sh)\n(.*?)```", page.read_text(encoding="utf-8"), re.S):
            joined = block.replace("\\\n", " ")
            found += [(where, line.strip()) for line in joined.splitlines() if line.strip().startswith("plantpheno ")]
    for path in sorted(RECIPES_DIR.rglob("*.yaml")):
        for line in path.read_text(encoding="utf-8").splitlines():
            match = re.match(r"#\s+(?:Usage:\s+)?(plantpheno \S.*)$", line)
            if match:
                found.append((path.relative_to(RECIPES_DIR).as_posix(), match.group(1)))
    return found


LINES = _usage_lines()
TUNE = [(where, line) for where, line in LINES if line.startswith("plantpheno tune ")]


def _argv(line: str) -> list[str]:
    """The arguments after ``plantpheno``; ``[--optional ...]`` groups of a synopsis left out."""
    return shlex.split(re.sub(r"\s\[--[^]]*\]", "", line), comments=True)[1:]


def test_the_shipped_files_show_tune_commands():
    assert {where for where, _ in TUNE} >= {"docs/guide/tuning.md", "tune/demo_space.yaml"}


@pytest.mark.parametrize(("where", "line"), LINES, ids=[line for _, line in LINES])
def test_every_usage_line_parses(where, line):
    parse_args(build_parser(), _argv(line))


@pytest.mark.parametrize(("where", "line"), TUNE, ids=[line for _, line in TUNE])
def test_every_tune_usage_line_runs(where, line, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    argv = _argv(line)
    assert main([*argv, "--dry-run"] if "--dry-run" not in argv else argv) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.startswith("study ")


def test_overrides_stand_anywhere_on_the_command_line():
    parser = build_parser()
    args = parse_args(parser, ["tune", "c.yaml", "s.yaml", "a.b=1", "--trials", "2", "training.epochs=2",
                               "--workers", "1", "model.dropout=0.1"])
    assert args.overrides == ["a.b=1", "training.epochs=2", "model.dropout=0.1"] and args.trials == 2
    args = parse_args(parser, ["train", "c.yaml", "--nproc", "2", "training.epochs=3"])
    assert args.overrides == ["training.epochs=3"] and args.nproc == 2
    for bad in (["tune", "c.yaml", "s.yaml", "--trials", "2", "--bogus"], ["models", "show", "leafnet", "x=1"]):
        with pytest.raises(SystemExit) as exc:
            parse_args(parser, bad)
        assert exc.value.code == 2


def test_a_tune_override_after_the_flags_reaches_the_trials(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    assert main(["tune", "demo", "tune/demo_space", "--sampler", "grid", "--dry-run",
                 "model.backbone=test_resnet", "--trials", "2"]) == 0
    out = capsys.readouterr().out
    assert "grid: 2 trials (2 of its 54 combinations, sampled with seed 0" in out
    assert main(["tune", "demo", "tune/demo_space.yaml", "--dry-run",
                 "training.epochs=ten"]) == 2
    assert "training.epochs: got 'ten'" in capsys.readouterr().err
