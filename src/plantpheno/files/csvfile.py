"""The CSV files plantpheno writes and reads (split.csv, bad_images.csv, predictions, per-class tables).

Every one goes through the ``csv`` module, so a file name holding a comma, a quote, a newline or a
carriage return is quoted and reads back whole. (With ``lineterminator="\\n"`` the csv writer quotes
fields with ``\\n`` but not with a lone ``\\r``, which a reader then takes for a line end: a row holding
one is written with every field quoted.) File names that are not valid UTF-8 arrive from the filesystem
as lone surrogates (``os.fsdecode``); they are written back as their original bytes and read with
``errors="surrogateescape"``, so the name read is the name of the same file.

Text cells that a spreadsheet would run as a formula (starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
return: a class folder named ``=HYPERLINK(...)``) are written with a single quote in front, as OWASP advises
(spreadsheets show the text, not its result); numbers, and text that is a plain number such as ``-0.5``, are
written as they are. A cell that already starts with quotes before such a character gets one more, so
:func:`read_csv` gives back exactly what was written by removing one quote from every cell that starts with
quotes followed by such a character.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from plantpheno.files.atomic import TEXT_ENCODING, atomic_write_text


# a formula trigger after any quotes already there (those get one more, so that reading is exact); a plain number
_FORMULA = re.compile(r"'*[=+\-@\t\r]")
_ESCAPED = re.compile(r"'+[=+\-@\t\r]")
_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?", re.ASCII)


def neutralise(cell: Any) -> Any:
    """A text cell a spreadsheet would run as a formula, with a ``'`` in front; anything else as it is."""
    if isinstance(cell, str) and _FORMULA.match(cell) and not _NUMBER.fullmatch(cell):
        return "'" + cell
    return cell


def restore(cell: str | None) -> str | None:
    """The text :func:`neutralise` was given (one ``'`` removed from a neutralised cell)."""
    return cell[1:] if isinstance(cell, str) and _ESCAPED.match(cell) and not _NUMBER.fullmatch(cell[1:]) else cell


def csv_text(rows: Iterable[Sequence[Any]]) -> str:
    """Rows as CSV text (``\\n`` line ends; fields quoted where needed; formula-like text neutralised)."""
    buf = io.StringIO()
    minimal = csv.writer(buf, lineterminator="\n")
    quoted = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL)
    for row in rows:
        cells = [neutralise(str(c) if isinstance(c, os.PathLike) else c) for c in row]
        (quoted if any(isinstance(c, str) and "\r" in c for c in cells) else minimal).writerow(cells)
    return buf.getvalue()


def write_csv(path: str | os.PathLike[str], rows: Iterable[Sequence[Any]]) -> None:
    """Write ``rows`` to ``path`` atomically."""
    atomic_write_text(path, csv_text(rows))


class _Reader(csv.DictReader):
    """A DictReader whose cells are given back as :func:`csv_text` was given them."""

    def __next__(self) -> dict:
        row = super().__next__()
        return {k: (restore(v) if isinstance(v, str) else v) for k, v in row.items()}


@contextmanager
def read_csv(path: str | os.PathLike[str]) -> Iterator[csv.DictReader]:
    """A ``csv.DictReader`` over ``path`` (UTF-8, a byte-order mark allowed, other bytes kept as surrogates),
    formula-neutralised cells restored (:func:`restore`).

    ``csv.Error`` (a NUL byte, an over-long field) reaches the caller, which names the file."""
    with Path(path).open(newline="", encoding="utf-8-sig", errors=TEXT_ENCODING["errors"]) as fh:
        yield _Reader(fh)


def has_surrogates(text: str) -> bool:
    """Whether ``text`` holds bytes that were not valid UTF-8 (decoded with ``surrogateescape``)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def undecodable_bytes(text: str) -> bytes:
    """``text`` as the bytes it was read from (for messages about text that is not UTF-8)."""
    return text.encode("utf-8", "surrogateescape")


_CONTROL = {c: f"\\x{c:02x}" for c in (*range(32), 127)}


def printable(text: str) -> str:
    """``text`` for a message or a plot: bytes that are not UTF-8 and control characters (a carriage return in
    a file name) shown as ``\\xNN`` escapes."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace").translate(_CONTROL)
