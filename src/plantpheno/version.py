"""The package version, at the bottom layer so any module can import it without importing the facade."""

from __future__ import annotations

__version__ = "0.1.0"
