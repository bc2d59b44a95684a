"""plantpheno: train, evaluate and track plant-phenotyping image models from one YAML config."""

from __future__ import annotations

__version__ = "0.1.0"
