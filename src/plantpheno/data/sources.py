"""Reading a dataset description: an image folder or a CSV manifest, into a list of samples."""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from plantpheno.files.csvfile import has_surrogates, printable, read_csv, undecodable_bytes
from plantpheno.errors import DataError

SPLITS = ("train", "val", "test")
# Trait values are learned and predicted in float32 (largest ~3.4e38), standardised by their mean and spread:
# values past this bound would overflow there, and no measured trait comes near it.
MAX_TRAIT_MAGNITUDE = 1e30


@dataclass(frozen=True)
class Sample:
    """One image: where it is, what it shows, and (optionally) its split and group."""

    path: Path
    target: str | float
    split: str | None = None
    group: str | None = None
    # one file per band: (band name, file) of each band read from a file named in a manifest column
    companions: tuple[tuple[str, Path], ...] = ()


@dataclass(frozen=True)
class Columns:
    """The manifest's column names (``data.path_column`` ... ``data.group_column``). A split or group column
    is optional under its default name; one the user named must be there."""

    path: str = "path"
    label: str = "label"
    value: str = "value"
    split: str = "split"
    group: str = "group"

    def target(self, task: str) -> str:
        return self.label if task == "classification" else self.value

    def used(self, task: str) -> tuple[str, ...]:
        return (self.path, self.target(task), self.split, self.group)


def _field_of(columns: Columns, name: str) -> str:
    """`` (data.group_column)`` for a column the user named in the config, else nothing."""
    fields = [f for f in ("path", "label", "value", "split", "group")
              if getattr(columns, f) == name and name != getattr(Columns(), f)]
    return f" (data.{fields[0]}_column)" if fields else ""


def _is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def read_folder(root: Path, *, extensions: tuple[str, ...]) -> list[Sample]:
    """``root/<class>/<image>`` (images may sit in sub-folders of a class folder).

    Hidden files and folders (names starting with ".") are never classes or images. A symlinked class
    folder is followed, and so is a symlinked image; symlinked sub-folders inside a class folder are not
    (so a link loop cannot recurse). Which of them lead outside ``root``: :func:`links_outside`.
    """
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "is not a folder"
        raise DataError(f"data.root {root} {what}")
    exts = {e.lower() for e in extensions}
    try:
        class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        samples = []
        for class_dir in class_dirs:
            files = sorted(
                p for p in class_dir.rglob("*")
                if p.suffix.lower() in exts and not p.is_dir() and not _is_hidden(p, root)
            )
            samples.extend(Sample(path=f, target=class_dir.name) for f in files)
    except OSError as exc:
        raise DataError(f"data.root {root}: cannot list {exc.filename or root} ({exc.strerror or exc})") from None
    if not samples:
        raise DataError(
            f"data.root {root} holds no images in class sub-folders (expected root/<class>/<image> "
            f"with extensions {', '.join(sorted(exts))})"
        )
    return samples


def links_outside(samples: list[Sample], root: Path) -> list[tuple[Path, Path]]:
    """(link, where it leads) for each symlinked class folder or image of a folder dataset whose target lies
    outside ``root``; a class folder's link is listed once, not once per image."""
    real_root = Path(os.path.realpath(root))
    found: dict[Path, Path] = {}
    for sample in samples:
        class_dir = root / sample.path.relative_to(root).parts[0]
        for link in (class_dir, sample.path):
            if link in found or not link.is_symlink():
                continue
            target = Path(os.path.realpath(link))
            if not target.is_relative_to(real_root):
                found[link] = target
                break
    return sorted(found.items())


def read_manifest(manifest: Path, *, root: Path | None, task: Literal["classification", "regression"],
                  exact: bool = False, columns: Columns = Columns(),
                  band_columns: tuple[tuple[str, str], ...] = ()) -> list[Sample]:
    """A CSV with ``path`` and ``label`` (classification) or ``value`` (regression) columns (other names:
    ``columns``).

    Optional columns: ``split`` (train/val/test) and ``group`` (images of one plant, tray or date
    that must stay in one split). Relative paths resolve against ``root`` when given, else against
    the manifest's own folder. ``band_columns`` (band name, column): columns naming one file per band (resolved
    as the path; each row needs one). The file is UTF-8 (a byte-order mark is fine); a path may hold bytes that
    are not UTF-8 (they name the file as the filesystem does), a label or group may not. ``exact`` (a
    run's own ``split.csv``) keeps every field as written, surrounding spaces included.
    """
    if not manifest.is_file():
        what = "is a folder, not a CSV file" if manifest.is_dir() else "does not exist"
        raise DataError(f"data.manifest {manifest} {what}")
    base = root if root is not None else manifest.parent
    target_col = columns.target(task)
    _check_text_file(manifest, target_col)
    try:
        with read_csv(manifest) as reader:
            found = [c.strip() for c in reader.fieldnames or []]
            reader.fieldnames = found
            _check_columns(manifest, found, columns, task, band_columns)
            has_split, has_group = columns.split in found, columns.group in found
            samples, problems = [], []
            for row in reader:
                # the file's line number: blank lines are skipped by DictReader, and a quoted field may span lines
                sample = _parse_row(row, reader.line_num, base, columns, target_col, has_split, has_group, problems,
                                    exact=exact, band_columns=band_columns)
                if sample is not None:
                    samples.append(sample)
    except csv.Error as exc:
        raise DataError(f"data.manifest {manifest} is not a readable CSV file ({exc}); save it as UTF-8 CSV "
                        f"with the columns {columns.path},{target_col}") from None
    except OSError as exc:
        raise DataError(f"data.manifest {manifest} cannot be read ({exc.strerror or exc})") from None
    if problems:
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        raise DataError(f"data.manifest {manifest} has {len(problems)} bad row(s):\n  " + "\n  ".join(problems[:50])
                        + more)
    if not samples:
        raise DataError(f"data.manifest {manifest} has no rows")
    return samples


def _check_columns(manifest: Path, found: list[str], columns: Columns, task: str,
                   band_columns: tuple[tuple[str, str], ...] = ()) -> None:
    """The path and target columns, a split or group column the user named, and the band file columns of
    ``data.bands`` must be in the header."""
    default = Columns()
    needed = [columns.path, columns.target(task)] + [
        getattr(columns, f) for f in ("split", "group") if getattr(columns, f) != getattr(default, f)]
    missing_bands = [f"{c} (data.bands: {band})" for band, c in band_columns if c not in found]
    if missing_bands:
        raise DataError(f"data.manifest {manifest}: missing column(s) {', '.join(missing_bands)}; found "
                        f"{found or 'none'}; expected a column naming each image's file of that band")
    missing = [c for c in needed if c not in found]
    target_field = "label" if task == "classification" else "value"
    if missing:
        raise DataError(
            f"data.manifest {manifest}: missing column(s) {', '.join(c + _field_of(columns, c) for c in missing)}; "
            f"found {found or 'none'} (task={task} expects {columns.path},{columns.target(task)} and optional "
            f"{columns.split},{columns.group}; set data.path_column, data.{target_field}_column ... for other "
            f"names)"
        )


def ignored_columns(manifest: Path, *, task: str, columns: Columns = Columns(),
                    band_columns: tuple[tuple[str, str], ...] = ()) -> list[str]:
    """The manifest's columns that nothing reads (a ``plant_id`` or ``date`` the user may have meant as groups)."""
    try:
        with read_csv(manifest) as reader:
            found = [c.strip() for c in reader.fieldnames or []]
    except (OSError, csv.Error, UnicodeDecodeError):
        return []  # read_manifest has already said what is wrong with the file
    used = set(columns.used(task)) | {c for _, c in band_columns}
    return [c for c in found if c and c not in used]


def _check_text_file(manifest: Path, target_col: str) -> None:
    """A manifest saved as UTF-16 ("Unicode text" in spreadsheets) or a binary file is refused by name: the
    csv module would read its NUL bytes as characters of strange column names."""
    try:
        with manifest.open("rb") as fh:
            head = fh.read(4096)
    except OSError as exc:
        raise DataError(f"data.manifest {manifest} cannot be read ({exc.strerror or exc})") from None
    if b"\x00" in head:
        kind = "UTF-16 text" if head[:2] in (b"\xff\xfe", b"\xfe\xff") else "binary data (NUL bytes)"
        raise DataError(f"data.manifest {manifest} holds {kind}, not UTF-8 CSV; save it as CSV UTF-8 with the "
                        f"columns path,{target_col}")


def _parse_row(row: dict[str, str | None], line: int, base: Path, columns: Columns, target_col: str,
               has_split: bool, has_group: bool, problems: list[str], *, exact: bool = False,
               band_columns: tuple[tuple[str, str], ...] = ()) -> Sample | None:
    def field(name: str) -> str:
        value = row.get(name) or ""
        return value if exact else value.strip()

    path_text, target_text = field(columns.path), field(target_col)
    if not path_text:
        problems.append(f"line {line}: empty path")
        return None
    shown = _shown(path_text)
    if not target_text:
        problems.append(f"line {line}: empty {target_col} for {shown}")
        return None
    # labels from a run's own split.csv may hold any bytes its class folder names held; a user's manifest is text
    for name, text in ((target_col, target_text), (columns.group, field(columns.group) if has_group else "")):
        if has_surrogates(text) and not exact:
            problems.append(f"line {line}: {name} {undecodable_bytes(text)!r} for {shown} is not UTF-8 text; save "
                            f"the manifest as UTF-8 (e.g. iconv -f latin1 -t utf-8 OLD.csv > NEW.csv)")
            return None
    target: str | float = target_text
    if target_col == "value":
        try:
            target = float(target_text)
        except ValueError:
            target = math.nan
        if not math.isfinite(target):
            problems.append(f"line {line}: value {_clip(target_text)!r} for {shown} is not a finite number")
            return None
        if abs(target) > MAX_TRAIT_MAGNITUDE:
            problems.append(f"line {line}: value {target_text} for {shown} is outside the supported range "
                            f"(|value| <= {MAX_TRAIT_MAGNITUDE:g}; traits are learned in float32): rescale the trait, "
                            f"e.g. to other units")
            return None
    split = field(columns.split).lower() if has_split else None
    if has_split and split not in SPLITS:
        problems.append(f"line {line}: {columns.split} {_clip(row.get(columns.split))!r} for {shown}; expected train, "
                        f"val or test")
        return None
    group = (field(columns.group) or None) if has_group else None
    companions = []
    for band, column in band_columns:
        text = field(column)
        if not text:
            problems.append(f"line {line}: empty {column} (the file of band {band}) for {shown}")
            return None
        companions.append((band, Path(text) if Path(text).is_absolute() else base / text))
    path = Path(path_text)
    return Sample(path=path if path.is_absolute() else base / path, target=target, split=split, group=group,
                  companions=tuple(companions))


def _clip(text: str | None, limit: int = 80) -> str | None:
    return text if text is None or len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def _shown(path_text: str) -> str:
    """A path for a message: non-UTF-8 bytes and control characters made visible."""
    return printable(_clip(path_text) or "")


def class_names_of(samples: list[Sample]) -> list[str]:
    """Sorted distinct labels: the class index of a label is its position here."""
    return sorted({str(s.target) for s in samples})
