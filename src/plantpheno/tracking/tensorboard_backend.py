"""TensorBoard: scalars, images (the confusion matrix, curves), and hparams at the end."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np


class TensorboardTracker:
    """Event files in ``RUN_DIR/tensorboard`` (``tensorboard --logdir OUTPUT_DIR`` shows all runs)."""

    name = "tensorboard"

    def __init__(self, *, log_dir: Path) -> None:
        import torch.utils.tensorboard  # noqa: F401 - needs the tensorboard package: fail at set-up

        self.log_dir = log_dir
        self.writer = None
        self.params: dict[str, str] = {}
        self.final: dict[str, float] = {}

    def start(self, *, run_name: str, resume_id: str | None) -> str | None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(self.log_dir))  # a resumed run appends a new event file
        return None

    def log_params(self, params: Mapping[str, str]) -> None:
        self.params.update(params)

    def log_metrics(self, metrics: Mapping[str, float], *, step: int, axis: str = "epoch") -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, global_step=step)
            if key.startswith("test/"):
                self.final[key] = float(value)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        table = "\n".join(f"| {k} | {v} |" for k, v in sorted(tags.items()))
        self.writer.add_text("tags", "| tag | value |\n|---|---|\n" + table)

    def log_artifact(self, path: Path, *, folder: str | None = None) -> None:
        if path.suffix.lower() != ".png":
            return  # TensorBoard shows scalars, images and text, not files
        from PIL import Image

        with Image.open(path) as img:
            pixels = np.asarray(img.convert("RGB"))
        self.writer.add_image(f"{folder or 'images'}/{path.stem}", pixels, dataformats="HWC")

    def finish(self, status: str) -> None:
        if self.writer is None:
            return
        if status == "completed" and self.final:
            self.writer.add_hparams(_hparam_values(self.params), self.final, run_name=".")
        self.writer.close()
        self.writer = None


def _hparam_values(params: Mapping[str, str]) -> dict[str, float | str]:
    """TensorBoard's hparams take numbers or strings: numbers stay numbers for its parallel-coordinates view."""
    out: dict[str, float | str] = {}
    for key, text in params.items():
        try:
            out[key] = float(text)
        except ValueError:
            out[key] = text
    return out
