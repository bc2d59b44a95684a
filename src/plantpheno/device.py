"""Choosing the device, precision and determinism settings."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from plantpheno.config import Config
from plantpheno.errors import ConfigError


def resolve_device(setting: str) -> torch.device:
    """``auto``: CUDA if available, then Apple MPS, then CPU. An unavailable explicit choice is an error."""
    if setting == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if setting.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device: got {setting!r} but CUDA is not available here; use device=cpu or auto")
        index = int(setting.split(":")[1]) if ":" in setting else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device: got {setting!r} but only {torch.cuda.device_count()} CUDA device(s) exist")
    if setting == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device: got 'mps' but Apple MPS is not available here; use device=cpu or auto")
    return torch.device(setting)


def amp_dtype(config: Config, device: torch.device) -> torch.dtype | None:
    """Mixed precision only on CUDA: bf16 where supported, else fp16 (which needs a grad scaler)."""
    choice = config.training.mixed_precision
    if device.type != "cuda" or choice == "off":
        return None
    if choice == "fp16" or (choice == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


def seed_everything(seed: int, *, deterministic: bool) -> None:
    """Seed Python, NumPy and torch; optionally force deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True
