"""Exceptions raised by plantpheno.

Every error a user can cause derives from :class:`PlantPhenoError`; the CLI turns it into a
one-line message and exit status 2 (no traceback). Messages name what was wrong (file, field,
value) and what was expected.
"""

from __future__ import annotations

import reprlib
from typing import Any


class PlantPhenoError(Exception):
    """Base class for errors caused by user input or environment, reported without traceback."""


class ConfigError(PlantPhenoError):
    """The configuration (YAML file or command-line override) is invalid."""


class DataError(PlantPhenoError):
    """The dataset (image folder, CSV manifest, image files) is invalid."""


class ModelError(PlantPhenoError):
    """The model cannot be built or its weights cannot be loaded."""


class TrainingError(PlantPhenoError):
    """Training cannot continue (non-finite loss, bad resume state, ...)."""


class RunDirError(PlantPhenoError):
    """A run directory is missing, incomplete or inconsistent, or another process is writing it."""


class StorageError(PlantPhenoError):
    """A file cannot be written: disk full, quota exceeded, file too large, permission denied, read-only
    filesystem. The message says what was being written, where, and what is still safe."""


class IntegrityError(PlantPhenoError):
    """A checkpoint, weights or package file does not match the SHA-256 recorded when it was written (a flipped
    bit, a truncated copy, an edit). The message names the file and what to use instead; nothing was overwritten."""


class RegistryError(PlantPhenoError):
    """A model name, version, alias or registry entry is invalid or missing."""


class ExportError(PlantPhenoError):
    """A model export failed or its outputs differ from the PyTorch model's."""


class TuningError(PlantPhenoError):
    """A study cannot run as asked (a study of that name made differently, a worker without its study, ...)."""


class ArgumentError(PlantPhenoError, ValueError):
    """A Python API function was called with an argument it cannot use (named in the message, with what was
    expected). Also a ValueError, so code that caught the bare errors of earlier versions still does."""


class DataCheckError(DataError):
    """The data checks found an error-level problem (leakage, conflicting labels, ...) and training was not started."""


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxdict = 3, 120, 120, 8, 8
_REPR.maxtuple = _REPR.maxset = 8


def short_repr(value: Any, limit: int = 200) -> str:
    """``repr(value)`` for a message: long strings and big or deeply nested values cut short (never expanded
    whole, so a value built from many YAML aliases stays cheap)."""
    return clip(_REPR.repr(value), limit)


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying how long it was."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"
