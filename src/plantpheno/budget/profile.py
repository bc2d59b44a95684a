"""What budget mode needs to know about the data before it plans: the split sizes, and whether aspect ratios vary
(only then do crop and pad differ, so only then is the resize rung worth its time)."""

from __future__ import annotations

from dataclasses import dataclass

from plantpheno.config import Config
from plantpheno.data.prepared import PreparedData, prepare_data
from plantpheno.reporting import Reporter

ASPECT_SAMPLE = 300  # images whose header is read: enough to see a mix of shapes, a second on a slow disk
ASPECT_VARIES = 1.1  # long side / short side above which crop and pad give different squares


@dataclass(frozen=True)
class DataProfile:
    prepared: PreparedData
    aspect_varies: bool


def profile_data(config: Config, *, reporter: Reporter | None = None) -> DataProfile:
    """Read and split the dataset as a run would (the same images and split every candidate gets) and look at the
    shapes of up to :data:`ASPECT_SAMPLE` training images."""
    prepared = prepare_data(config, reporter=reporter)
    return DataProfile(prepared, _aspect_varies(prepared))


def _aspect_varies(prepared: PreparedData) -> bool:
    from PIL import Image

    samples = prepared.splits["train"]
    step = max(1, len(samples) // ASPECT_SAMPLE)
    for sample in samples[::step]:
        try:
            with Image.open(sample.path) as image:  # reads the header only
                width, height = image.size
        except OSError:
            continue  # prepare_data checked the images; a file that changed since fails in the run itself
        if max(width, height) / max(1, min(width, height)) > ASPECT_VARIES:
            return True
    return False
