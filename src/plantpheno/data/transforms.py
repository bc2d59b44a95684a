"""Image transforms: plant-suited training augmentations, and deterministic evaluation preprocessing.

How an image becomes the model's square is ``data.resize`` (:class:`Square`):

* ``crop``: shorter side to the size, then the centre square. Nothing is distorted, but a wide or tall
  image loses its ends (a tall plant its top leaves). Right for close-ups where any square window shows
  the class (a leaf's lesions), and for square photos.
* ``pad``: longer side to the size, then letterboxed into the square with the normalisation mean (the
  network sees zero there; timm's ``crop_mode='border'`` pads the same way). The whole image is kept,
  undistorted, at a smaller scale. Right for whole-plant traits (leaf count, height, width) on photos of
  any aspect.
* ``stretch``: both sides to the size. The whole image at full resolution, but shapes are distorted by the
  aspect ratio; for data sets whose images all share one aspect (the distortion is then the same for all).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2 as T
from torchvision.transforms.v2 import functional as F

from plantpheno.config import AugmentConfig
from plantpheno.data.batch_augment import pad_fill, whole_view
from plantpheno.data.cache import TRAIN_MARGIN, CacheSpec, resize_image


def letterbox(image: Image.Image, side: int, fill: Sequence[int]) -> Image.Image:
    """``image`` (its longer side at most ``side``) centred on a ``side`` x ``side`` canvas of colour ``fill``."""
    canvas = Image.new("RGB", (side, side), tuple(int(v) for v in fill))
    canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return canvas


class Square:
    """``data.resize`` as one step: a PIL image -> ``side`` x ``side`` (see the module's docstring).

    An image that already has the resized size (the image cache stores that) is not resampled again, so
    evaluation sees the same pixels with and without a cache."""

    def __init__(self, side: int, resize: str, fill: Sequence[int]) -> None:
        self.spec, self.fill = CacheSpec(side, resize), tuple(fill)

    def __call__(self, image: Image.Image) -> Image.Image:
        image = resize_image(image, self.spec)
        side = self.spec.side
        if self.spec.resize == "crop":
            return F.center_crop(image, [side, side])
        if self.spec.resize == "pad":
            return letterbox(image, side, self.fill)
        return image

    def content(self, image: Image.Image) -> tuple[float, float]:
        """Half-extents of the image inside its square, as fractions of the square's half-side: (1, 1) but
        for ``pad``, where the shorter side leaves a border."""
        if self.spec.resize != "pad":
            return 1.0, 1.0
        height, width = resize_image(image, self.spec).size[::-1]
        return width / self.spec.side, height / self.spec.side

    def __repr__(self) -> str:
        return f"Square(side={self.spec.side}, resize={self.spec.resize!r}, fill={self.fill})"


class WholeView:
    """``data.augment.keep_whole``: rotation, a zoom out and a shift that keep the whole square the evaluation
    sees in view (the same geometry as the batched path, :func:`~plantpheno.data.batch_augment.whole_view`);
    uncovered pixels take the letterbox colour. Random numbers come from torch's generator, which the dataset
    seeds per sample."""

    def __init__(self, side: int, resize: str, fill: Sequence[int], augment: AugmentConfig) -> None:
        self.square = Square(side, resize, fill)
        self.rotation, self.crop_scale = augment.rotation, tuple(augment.crop_scale)

    def __call__(self, image: Image.Image) -> Image.Image:
        content = self.square.content(image)
        square = self.square(image)
        u = torch.rand(4).double().numpy()
        angle = math.radians(self.rotation * (2 * u[0] - 1))
        zoom, tx, ty = (float(v[0]) for v in whole_view(np.array([content]), np.array([angle]), u[1:2], u[2:3],
                                                         u[3:4], self.crop_scale))
        half = self.square.spec.side / 2
        # F.affine turns the other way round from the batched path's angle; the fit is the same either way
        return F.affine(square, angle=math.degrees(angle), translate=[tx * half, ty * half], scale=zoom,
                        shear=[0.0, 0.0], interpolation=T.InterpolationMode.BILINEAR, fill=list(self.square.fill))


def _to_tensor(mean: Sequence[float], std: Sequence[float]) -> list[T.Transform]:
    return [T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(list(mean), list(std))]


def model_square(image_size: int, mean: Sequence[float], resize: str = "crop") -> Square:
    """The square the model sees of an image at evaluation (``data.resize`` with the letterbox colour of the
    normalisation ``mean``): the evaluation transforms start with it, and the report draws its images with it,
    so what a person is shown is what the model saw."""
    return Square(image_size, resize, pad_fill(mean))


def square_transform(image_size: int, mean: Sequence[float], resize: str = "crop") -> T.Compose:
    """The evaluation preprocessing without normalisation: RGB in [0, 1], ``(3, S, S)`` (what exports take)."""
    return T.Compose([model_square(image_size, mean, resize), T.ToImage(), T.ToDtype(torch.float32, scale=True)])


def eval_transform(image_size: int, mean: Sequence[float], std: Sequence[float], resize: str = "crop") -> T.Compose:
    """``data.resize`` to the square (crop: shorter side to ``image_size`` and the centre square), normalised."""
    return T.Compose([model_square(image_size, mean, resize), *_to_tensor(mean, std)])


def train_transform(image_size: int, mean: Sequence[float], std: Sequence[float],
                    augment: AugmentConfig, resize: str = "crop") -> T.Compose:
    """Random rotation, resized crop, flips and colour jitter, as configured; off -> the eval transform.

    Rotation comes before cropping so the corners it brings in (black with ``crop``, the letterbox colour
    otherwise) are mostly cropped away. ``pad`` and ``stretch`` crop from the square the evaluation sees;
    ``keep_whole`` zooms out and shifts instead (:class:`WholeView`). Flips in both directions are safe for
    top-down and single-leaf photos, which have no canonical "up".
    """
    if not augment.enabled:
        return eval_transform(image_size, mean, std, resize)
    fill = pad_fill(mean)
    random_crop = tuple(augment.crop_scale) != (1.0, 1.0)
    steps: list = []
    if augment.keep_whole:
        steps.append(WholeView(image_size, resize, fill, augment))
    elif resize == "crop":
        if augment.rotation > 0:
            steps.append(T.RandomRotation(augment.rotation))
        if random_crop:
            steps.append(T.RandomResizedCrop(image_size, scale=tuple(augment.crop_scale), antialias=True))
        else:
            steps += [T.Resize(image_size, antialias=True), T.CenterCrop(image_size)]
    else:  # the whole image in a square first, then rotation and crops as above, inside that square
        source = math.ceil(image_size * TRAIN_MARGIN) if random_crop else image_size  # as the training cache
        steps.append(Square(source, resize, fill))
        if augment.rotation > 0:
            steps.append(T.RandomRotation(augment.rotation, fill=list(fill)))
        if random_crop:
            steps.append(T.RandomResizedCrop(image_size, scale=tuple(augment.crop_scale), antialias=True))
    if augment.hflip > 0:
        steps.append(T.RandomHorizontalFlip(augment.hflip))
    if augment.vflip > 0:
        steps.append(T.RandomVerticalFlip(augment.vflip))
    if augment.color_jitter > 0 or augment.hue > 0:
        c = augment.color_jitter
        steps.append(T.ColorJitter(brightness=c, contrast=c, saturation=c, hue=augment.hue))
    return T.Compose([*steps, *_to_tensor(mean, std)])
