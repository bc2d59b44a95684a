"""Checkpoints: atomic writes of plain tensors/containers, loadable with ``torch.load(weights_only=True)``, each
with its SHA-256 sidecar (``best.pt.sha256``), checked before the checkpoint is used."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from plantpheno.files.atomic import atomic_write_with, verify_checksum
from plantpheno.errors import RunDirError
from plantpheno.reporting import Reporter
from plantpheno.run.folder import BEST, LAST, RunDir

FORMAT = "plantpheno-checkpoint/1"


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` atomically: a crash mid-write leaves the previous file intact."""
    atomic_write_with(path, lambda fh: torch.save({"format": FORMAT, **payload}, fh), checksum=True)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint without unpickling arbitrary code (``weights_only=True``), after checking its SHA-256.

    Raises:
        IntegrityError: the file does not match its checksum (the message says which checkpoint to use instead).
        RunDirError: it is missing or not a plantpheno checkpoint.
    """
    if not path.is_file():
        raise RunDirError(f"checkpoint {path} does not exist")
    verify_checksum(path, remedy=_remedy(path))
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for bad files
        raise RunDirError(f"checkpoint {path} cannot be read: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise RunDirError(f"checkpoint {path} is not a plantpheno checkpoint ({FORMAT})")
    return payload


def checkpoint_to_use(run: RunDir, reporter: Reporter) -> dict[str, Any]:
    """The run's best checkpoint, checked; its last one, with a warning, when there is no best.pt: the user asked
    for "the trained model", and last.pt is that model at a later epoch, so refusing would leave a run whose
    best.pt was deleted or never written (no epoch improved) without any evaluation; a silent fallback would
    present another epoch's weights as the best ones."""
    path = run.checkpoint_to_use()
    if path is None:
        raise RunDirError(f"{run.path} has no checkpoint yet ({run.best_checkpoint} and {run.last_checkpoint} "
                          f"are missing)")
    checkpoint = load_checkpoint(path)
    if path != run.best_checkpoint:
        reporter.warning(f"{run.best_checkpoint} is missing: using {path.name} instead (epoch "
                         f"{checkpoint['state']['epoch']}, the last one saved, which may not be the best)")
    return checkpoint


def resume_checkpoint(run: RunDir, reporter: Reporter | None) -> dict[str, Any] | None:
    """``last.pt``, or None (with a plain message) for a run that stopped before its first epoch ended."""
    if run.last_checkpoint.is_file():
        return load_checkpoint(run.last_checkpoint)
    if reporter is not None:
        reporter.warning(f"{run.path} has no checkpoint ({run.last_checkpoint.name}): it stopped before its first "
                         f"epoch ended, so training starts again from epoch 1")
    return None


def _remedy(path: Path) -> str:
    """What a user can do when a checkpoint of a run folder is damaged."""
    if path.name == BEST:
        return (f"The run's {path.with_name(LAST)} (the latest epoch) is checked separately: move {BEST} "
                f"aside and evaluate, report, predict and register use {LAST} (and say so), or train again.")
    if path.name == LAST:
        return (f"Resuming cannot continue from it; evaluate, report, predict and register use "
                f"{path.with_name(BEST)} when it is intact; to train further, start a new run.")
    return "Use another checkpoint, or restore this one from a copy."


def capture_rng() -> dict[str, Any]:
    """Every random generator the training loop touches, as weights_only-safe values."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": list(random.getstate()[1]) + [random.getstate()[0], random.getstate()[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[-2], tuple(py[:-2]), py[-1]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
