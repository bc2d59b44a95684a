"""Reading a dataset description: an image folder or a CSV manifest, into a list of samples."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from plantpheno.errors import DataError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Sample:
    """One image: where it is, what it shows, and (optionally) its split and group."""

    path: Path
    target: str | float
    split: str | None = None
    group: str | None = None


def _is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def read_folder(root: Path, *, extensions: tuple[str, ...]) -> list[Sample]:
    """``root/<class>/<image>`` (images may sit in sub-folders of a class folder).

    Hidden files and folders (names starting with ".") are never classes or images.
    """
    if not root.is_dir():
        raise DataError(f"data.root {root} is not a folder")
    exts = {e.lower() for e in extensions}
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    samples = []
    for class_dir in class_dirs:
        files = sorted(
            p for p in class_dir.rglob("*")
            if p.suffix.lower() in exts and not p.is_dir() and not _is_hidden(p, root)
        )
        samples.extend(Sample(path=f, target=class_dir.name) for f in files)
    if not samples:
        raise DataError(
            f"data.root {root} holds no images in class sub-folders (expected root/<class>/<image> "
            f"with extensions {', '.join(sorted(exts))})"
        )
    return samples


def read_manifest(manifest: Path, *, root: Path | None,
                  task: Literal["classification", "regression"]) -> list[Sample]:
    """A CSV with ``path`` and ``label`` (classification) or ``value`` (regression) columns.

    Optional columns: ``split`` (train/val/test) and ``group`` (images of one plant, tray or date
    that must stay in one split). Relative paths resolve against ``root`` when given, else against
    the manifest's own folder.
    """
    if not manifest.is_file():
        raise DataError(f"data.manifest {manifest} does not exist")
    base = root if root is not None else manifest.parent
    target_col = "label" if task == "classification" else "value"
    with manifest.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip() for c in reader.fieldnames or []]
        reader.fieldnames = columns
        missing = [c for c in ("path", target_col) if c not in columns]
        if missing:
            raise DataError(
                f"data.manifest {manifest}: missing column(s) {', '.join(missing)}; found {columns or 'none'} "
                f"(task={task} expects path,{target_col} and optional split,group)"
            )
        has_split, has_group = "split" in columns, "group" in columns
        samples, problems = [], []
        for row in reader:
            # the file's line number: blank lines are skipped by DictReader, and a quoted field may span lines
            sample = _parse_row(row, reader.line_num, base, target_col, has_split, has_group, problems)
            if sample is not None:
                samples.append(sample)
    if problems:
        raise DataError(f"data.manifest {manifest} has {len(problems)} bad row(s):\n  " + "\n  ".join(problems[:50]))
    if not samples:
        raise DataError(f"data.manifest {manifest} has no rows")
    return samples


def _parse_row(row: dict[str, str | None], line: int, base: Path, target_col: str, has_split: bool,
               has_group: bool, problems: list[str]) -> Sample | None:
    path_text = (row.get("path") or "").strip()
    target_text = (row.get(target_col) or "").strip()
    if not path_text:
        problems.append(f"line {line}: empty path")
        return None
    if not target_text:
        problems.append(f"line {line}: empty {target_col} for {path_text}")
        return None
    target: str | float = target_text
    if target_col == "value":
        try:
            target = float(target_text)
        except ValueError:
            target = math.nan
        if not math.isfinite(target):
            problems.append(f"line {line}: value {target_text!r} for {path_text} is not a finite number")
            return None
    split = (row.get("split") or "").strip().lower() if has_split else None
    if has_split and split not in SPLITS:
        problems.append(f"line {line}: split {row.get('split')!r} for {path_text}; expected train, val or test")
        return None
    group = (row.get("group") or "").strip() or None if has_group else None
    path = Path(path_text)
    return Sample(path=path if path.is_absolute() else base / path, target=target, split=split, group=group)


def class_names_of(samples: list[Sample]) -> list[str]:
    """Sorted distinct labels: the class index of a label is its position here."""
    return sorted({str(s.target) for s in samples})
