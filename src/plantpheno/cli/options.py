"""Numeric command-line options, checked as strictly as config fields: finite, whole where a count is meant,
and in range. A bad value ends the command with argparse's one-line usage error (exit status 2)."""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable


def integer(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """An argparse ``type``: a whole number in ``[low, high]``."""

    def parse(text: str) -> int:
        try:  # ASCII digits only: int() also reads '١٢' (Arabic-Indic) as 12, and isdigit() passes '²'
            value = int(text.strip()) if re.fullmatch(r"\s*[+-]?[0-9]+\s*", text, re.ASCII) else int("x")
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number{_range(low, high)}, got {text!r}") from None
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected a whole number{_range(low, high)}, got {value}")
        return value

    return parse


def number(low: float | None = None, high: float | None = None, *, above: bool = False) -> Callable[[str], float]:
    """An argparse ``type``: a finite number in ``[low, high]`` (``(low, high]`` with ``above``)."""

    def parse(text: str) -> float:
        try:
            value = float(text.strip())
        except ValueError:
            value = math.nan
        too_low = low is not None and (value <= low if above else value < low)
        if not math.isfinite(value) or too_low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected a finite number{_range(low, high, above=above)}, got {text!r}")
        return value

    return parse


def _range(low: float | None, high: float | None, *, above: bool = False) -> str:
    if low is not None and high is not None:
        return f" {'>' if above else '>='} {low:g} and <= {high:g}"
    if low is not None:
        return f" {'>' if above else '>='} {low:g}"
    return f" <= {high:g}" if high is not None else ""
