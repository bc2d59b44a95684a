"""Training augmentations for a whole batch at once (``data.augment.batched: true``, the default).

The per-sample torchvision pipeline spends ~2.5 ms per 128 px image on rotation, crop and colour jitter,
most of it Python and per-call overhead; decoding a cached image costs nothing. Here each sample only
contributes its uint8 pixels (the square the evaluation sees, at ``source_size``: :func:`make_square`) and a small
vector of random parameters drawn from its own seed; then one ``grid_sample`` applies every sample's
crop + rotation + flips in a single resampling, and brightness, contrast, saturation and hue run as
batched tensor arithmetic. The result is deterministic per sample (it depends on the sample's seed, not
on the batch it lands in or the number of workers), so exact resume keeps working.

A loader worker sends the augmented batch as uint8, rounded to the nearest level (as torchvision's uint8
and PIL pipelines round after each step), and :func:`to_device` normalises it where it is used: a quarter
of float32's bytes to share between processes (allocating the shared block is most of the cost of sending
a batch) and to copy to a GPU.

What differs from the per-sample path (``batched: false``):

* crops are taken inside the square the evaluation sees (with ``data.resize: crop`` its centre square);
  for non-square photos the per-sample path may crop from the sides too;
* rotation turns the crop window, and pixels it brings in from outside the image are mirrored
  (``reflection`` padding), so there are no black corners; with ``data.resize: pad`` or
  ``data.augment.keep_whole`` they take the letterbox colour instead (mirroring would add leaves);
* colour jitter is one 3x3 colour matrix and offset per image: brightness, contrast, saturation, then hue
  (torchvision draws a random order per image and clips after each step), with hue turned in YIQ space
  (see :func:`_hue_matrix`). Each of brightness, contrast and saturation alone matches torchvision; all
  four together differ from torchvision's steps with the same factors by a mean of about 1/255 on
  PlantVillage leaves and up to ~6/255 on vivid photos (hue and clipping only at the end).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from plantpheno.config import AugmentConfig

if TYPE_CHECKING:
    from plantpheno.data.cache import CacheSpec

# columns of the parameter matrix
_CX, _CY, _SX, _SY, _ANGLE, _HFLIP, _VFLIP, _BRIGHT, _CONTRAST, _SAT, _HUE = range(11)
NUM_PARAMS = 11
_LOG_RATIO = (math.log(3 / 4), math.log(4 / 3))  # RandomResizedCrop's default aspect-ratio range
_IDENTITY = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
# the uniform draws of a sample: 10 crop tries (area, then aspect ratio), crop position, angle, flips, colour
_CROP_TRIES = 10
_U_AREA, _U_RATIO = slice(0, _CROP_TRIES), slice(_CROP_TRIES, 2 * _CROP_TRIES)
_U_X, _U_Y, _U_ANGLE, _U_HFLIP, _U_VFLIP, _U_HUE = range(2 * _CROP_TRIES, 2 * _CROP_TRIES + 6)
_U_COLOUR = slice(2 * _CROP_TRIES + 6, 2 * _CROP_TRIES + 9)
_DRAWS = 2 * _CROP_TRIES + 9


def uniforms(seeds: Sequence[int] | np.ndarray, count: int) -> np.ndarray:
    """(N, count) float64 uniforms in [0, 1): draw k of sample i is SplitMix64's output for the state
    ``mix(seeds[i]) + (k+1) * golden`` (a counter-based generator, as Java's SplittableRandom), so each row
    depends on its own seed only; mixing the seed first keeps seeds a multiple of the golden step apart from
    sharing draws."""
    state = _mix64(np.asarray(seeds, dtype=np.uint64).reshape(-1, 1))
    with np.errstate(over="ignore"):  # arithmetic modulo 2**64 is the point
        z = _mix64(state + np.arange(1, count + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser (Stafford's variant 13) on uint64s."""
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def pad_fill(mean: Sequence[float]) -> tuple[int, int, int]:
    """The letterbox colour: the normalisation mean as 8-bit RGB (about zero once normalised)."""
    r, g, b = (min(255, max(0, round(255 * float(m)))) for m in mean)
    return r, g, b


def whole_view(content: np.ndarray, angle: np.ndarray, u_area: np.ndarray, u_x: np.ndarray, u_y: np.ndarray,
               crop_scale: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``data.augment.keep_whole``'s geometry: per sample, the zoom (<= 1) and shift (in units of the square's
    half-side) that keep a rotated image in view.

    ``content`` (N, 2) holds the image's half-extents inside its square (fractions of the half-side: 1, 1
    unless letterboxed), ``angle`` the rotation (radians). The zoom is ``sqrt(area)`` with the area drawn from
    ``crop_scale`` (zooming out as a crop zooms in), shrunk further until the rotated image's bounding box
    fits; the shift is drawn uniformly from the room left. Every pixel of the image stays in view.
    """
    content = np.asarray(content, dtype=np.float64).reshape(-1, 2)
    cw, ch = content[:, 0], content[:, 1]
    cos, sin = np.abs(np.cos(angle)), np.abs(np.sin(angle))
    need_x, need_y = cw * cos + ch * sin, cw * sin + ch * cos  # half-extents of the rotated image
    low, high = crop_scale
    zoom = np.minimum(np.sqrt(low + (high - low) * np.asarray(u_area)), 1 / np.maximum(need_x, need_y))
    tx = (2 * np.asarray(u_x) - 1) * np.maximum(0.0, 1 - zoom * need_x)
    ty = (2 * np.asarray(u_y) - 1) * np.maximum(0.0, 1 - zoom * need_y)
    return zoom, tx, ty


class BatchAugment:
    """Draw per-sample parameters (:meth:`params`) and apply them to a uint8 batch (:meth:`__call__`).

    ``resize`` is ``data.resize``: with ``pad`` (and with ``keep_whole``, which zooms out) pixels from outside
    the source square take the letterbox colour (the normalisation mean) instead of being mirrored: a mirrored
    leaf would be one more leaf to count."""

    def __init__(self, image_size: int, mean: Sequence[float], std: Sequence[float], augment: AugmentConfig,
                 resize: str = "crop") -> None:
        self.image_size = image_size
        self.augment = augment
        self.resize = resize
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1)
        # (pixels / 255 - mean) / std = pixels * scale + shift
        self._scale, self._shift = 1 / (255 * self.std), -self.mean / self.std
        self.fill = pad_fill(mean)
        self._fill = torch.tensor(self.fill, dtype=torch.float32).view(1, 3, 1, 1)
        self._fill_outside = resize == "pad" or augment.keep_whole

    def params(self, seeds: Sequence[int] | np.ndarray, content: np.ndarray | None = None) -> np.ndarray:
        """Each sample's parameters from its seed alone: a float64 (N, :data:`NUM_PARAMS`) array. Row i depends
        only on ``seeds[i]`` (its random numbers are a hash of the seed and a counter, :func:`uniforms`), and
        the whole batch is drawn in a few array operations: 4 instead of 17 us an image. ``content`` (N, 2):
        each image's half-extents in its square (:func:`make_square`; default: the whole square), which
        ``keep_whole`` keeps in view."""
        a = self.augment
        u = uniforms(seeds, _DRAWS)
        n = len(u)
        p = np.zeros((n, NUM_PARAMS))
        p[:, _ANGLE] = np.radians(a.rotation * (2 * u[:, _U_ANGLE] - 1))
        p[:, _HFLIP] = u[:, _U_HFLIP] < a.hflip
        p[:, _VFLIP] = u[:, _U_VFLIP] < a.vflip
        if a.keep_whole:
            self._whole_view(p, u, np.ones((n, 2)) if content is None else content)
        else:
            self._crop(p, u)
        c = a.color_jitter
        p[:, [_BRIGHT, _CONTRAST, _SAT]] = max(0.0, 1 - c) + (1 + c - max(0.0, 1 - c)) * u[:, _U_COLOUR]
        p[:, _HUE] = a.hue * (2 * u[:, _U_HUE] - 1)
        return p

    def _crop(self, p: np.ndarray, u: np.ndarray) -> None:
        n = len(u)
        low, high = self.augment.crop_scale
        w = h = np.ones(n)  # crop size as fractions of the source square's side
        if (low, high) != (1.0, 1.0):  # RandomResizedCrop: area fraction and log aspect ratio, 10 tries
            area = low + (high - low) * u[:, _U_AREA]
            ratio = np.exp(_LOG_RATIO[0] + (_LOG_RATIO[1] - _LOG_RATIO[0]) * u[:, _U_RATIO])
            cw, ch = np.sqrt(area * ratio), np.sqrt(area / ratio)
            fits = (cw <= 1) & (ch <= 1)
            first = fits.argmax(axis=1)  # the first try that fits; none fits: the whole square
            rows = np.arange(n)
            w = np.where(fits.any(axis=1), cw[rows, first], 1.0)
            h = np.where(fits.any(axis=1), ch[rows, first], 1.0)
        x0, y0 = u[:, _U_X] * (1 - w), u[:, _U_Y] * (1 - h)
        # grid_sample coordinates run from -1 to 1 across the source: centre and half-extent of the crop
        p[:, _CX], p[:, _CY], p[:, _SX], p[:, _SY] = 2 * x0 + w - 1, 2 * y0 + h - 1, w, h

    def _whole_view(self, p: np.ndarray, u: np.ndarray, content: np.ndarray) -> None:
        angle = p[:, _ANGLE]
        zoom, tx, ty = whole_view(content, angle, u[:, _U_AREA.start], u[:, _U_X], u[:, _U_Y],
                                  self.augment.crop_scale)
        dx, dy = 1 - 2 * p[:, _HFLIP], 1 - 2 * p[:, _VFLIP]
        cos, sin = np.cos(angle), np.sin(angle)
        # an output point o shows the source point R D (o - t) / zoom (R the rotation, D the flips, t the
        # shift): the window's half-extent is 1 / zoom and its centre -R D t / zoom
        p[:, _SX] = p[:, _SY] = 1 / zoom
        p[:, _CX] = -(cos * dx * tx - sin * dy * ty) / zoom
        p[:, _CY] = -(sin * dx * tx + cos * dy * ty) / zoom

    def __call__(self, images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """``images`` (N, 3, S, S) uint8 and ``params`` (N, NUM_PARAMS) -> normalised float (N, 3, size, size)."""
        return self.normalise(self.pixels(images, params))

    def pixels(self, images: torch.Tensor, params: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """The augmented images as uint8 (N, 3, size, size), rounded to the nearest level, as torchvision's uint8
        and PIL pipelines round after each step; written into ``out`` when given. A quarter of float32's bytes
        to send from a loader worker (and to a GPU), normalised by :meth:`normalise` where they are used."""
        p = params.to(device=images.device, dtype=torch.float32)
        # in 0..255 (resampling and colour matrices are linear), in a buffer of its own: changed in place below
        x = self._geometry(images.to(torch.float32, copy=True), p)
        if self.augment.color_jitter > 0 or self.augment.hue > 0:
            x = self._colour(x, p)  # adds 0.5 and clamps to [0.5, 255.5]
        else:
            x = x.add_(0.5)
        if out is None:
            out = torch.empty(x.shape, dtype=torch.uint8, device=x.device)
        return out.copy_(x)  # float -> uint8 truncates: round half up

    def normalise(self, pixels: torch.Tensor, memory_format: torch.memory_format = torch.contiguous_format
                  ) -> torch.Tensor:
        """uint8 pixels (N, 3, H, W) -> ``(pixels / 255 - mean) / std`` as float32 in ``memory_format``."""
        scale, shift = self._scale.to(pixels.device), self._shift.to(pixels.device)
        # in NCHW, then the layout: a (1, 3, 1, 1) broadcast over channels_last's innermost channels is 6x slower
        x = pixels.to(dtype=torch.float32, memory_format=torch.contiguous_format).mul_(scale).add_(shift)
        return x.contiguous(memory_format=memory_format)

    def _geometry(self, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        cos, sin = torch.cos(p[:, _ANGLE]), torch.sin(p[:, _ANGLE])
        fx = p[:, _SX] * (1 - 2 * p[:, _HFLIP])  # a flip mirrors the output axis
        fy = p[:, _SY] * (1 - 2 * p[:, _VFLIP])
        theta = torch.stack([torch.stack([cos * fx, -sin * fy, p[:, _CX]], 1),
                             torch.stack([sin * fx, cos * fy, p[:, _CY]], 1)], 1)
        size = self.image_size
        identity = bool((theta - _IDENTITY.to(x.device)).abs().max() < 1e-12) and x.shape[-1] == size
        if identity:
            return x
        grid = affine_grid(theta, size)
        if not self._fill_outside:
            return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        fill = self._fill.to(x.device)  # zeros padding around (x - fill): the fill colour outside the source
        return F.grid_sample(x.sub_(fill), grid, mode="bilinear", padding_mode="zeros", align_corners=False).add_(fill)

    def _colour(self, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """Brightness, contrast, saturation and hue of 0..255 images folded into one 3x3 matrix and offset per
        image; plus 0.5 and clamped to [0.5, 255.5], so that truncating to uint8 rounds the clipped value.
        One pass over the pixels."""
        n = x.shape[0]
        b, c, s = (p[:, col].view(n, 1, 1) for col in (_BRIGHT, _CONTRAST, _SAT))
        eye = torch.eye(3, device=x.device).expand(n, 3, 3)
        luma = _LUMA.to(x.device)
        # saturation blends with the grey image: s*I + (1-s) * (each channel <- luma . rgb)
        sat = s * eye + (1 - s) * luma.view(1, 1, 3).expand(n, 3, 3)
        matrix = _hue_matrix(p[:, _HUE]) @ sat  # (N, 3, 3)
        grey_mean = (x.mean(dim=(-2, -1)) @ luma).view(n, 1, 1)  # mean of the grey image, without making it
        # contrast blends b*x with its mean grey level b*m: c*b*x + (1-c)*b*m
        offset = matrix @ ((1 - c) * b * grey_mean).expand(n, 3, 1)
        out = torch.baddbmm(offset + 0.5, c * b * matrix, x.reshape(n, 3, -1))
        return torch.clamp(out, 0.5, 255.5, out=out).view_as(x)


def affine_grid(theta: torch.Tensor, size: int) -> torch.Tensor:
    """``F.affine_grid(theta, [N, C, size, size], align_corners=False)``, computed as two broadcast sums per
    coordinate instead of a (N, size*size, 3) x (N, 3, 2) batched matmul: 0.018 instead of 0.10 ms per 128 px
    image on one core, as much as the resampling itself took (equal to float rounding)."""
    n = theta.shape[0]
    base = (torch.arange(size, dtype=theta.dtype, device=theta.device) * 2 + 1) / size - 1  # pixel centres
    grid = torch.empty(n, size, size, 2, dtype=theta.dtype, device=theta.device)
    for k in range(2):  # output x, then y: theta[k] . (column, row, 1)
        along_x = theta[:, k, 0, None, None] * base.view(1, 1, size)
        along_y = theta[:, k, 1, None, None] * base.view(1, size, 1) + theta[:, k, 2, None, None]
        torch.add(along_x, along_y, out=grid[..., k])
    return grid


# ITU-R 601-2 luma (torchvision's rgb_to_grayscale weights), and the NTSC RGB -> YIQ matrix
_LUMA = torch.tensor([0.2989, 0.587, 0.114])
_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_INV = torch.linalg.inv(_YIQ)


def _hue_matrix(shift: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3) matrices turning each image's colours by ``shift`` (fractions of a turn) around the grey axis,
    in YIQ space: a linear stand-in for HSV hue rotation (as NVIDIA DALI's hue op). Against torchvision's
    ``adjust_hue`` on PlantVillage photos the mean pixel difference is 1.3/255 at a shift of 0.02 (the default
    ``data.augment.hue``) and 4.7/255 at 0.1. (YIQ's hue angle turns the other way from HSV's, hence the minus.)"""
    angle = -2 * math.pi * shift.float()
    cos, sin = torch.cos(angle), torch.sin(angle)
    zero, one = torch.zeros_like(cos), torch.ones_like(cos)
    rot = torch.stack([torch.stack([one, zero, zero], -1), torch.stack([zero, cos, -sin], -1),
                       torch.stack([zero, sin, cos], -1)], -2)
    return _YIQ_INV.to(shift.device) @ rot @ _YIQ.to(shift.device)


def center_square(image: np.ndarray, side: int) -> np.ndarray:
    """The centre square of an (H, W, 3) uint8 image at ``side`` x ``side`` (a view where no resize is needed).

    The training cache (and the uncached decode) already give the shorter side at ``side``, so this is a
    slice; an image of another size is resized (slow: a PIL resize per image).
    """
    height, width = image.shape[:2]
    short = min(height, width)
    top, left = (height - short) // 2, (width - short) // 2
    square = image[top:top + short, left:left + short]
    if short != side:
        square = np.asarray(Image.fromarray(square).resize((side, side), Image.Resampling.BILINEAR))
    return square


def make_square(image: np.ndarray, side: int, resize: str, fill: Sequence[int]
                ) -> tuple[np.ndarray, tuple[float, float]]:
    """The (side, side, 3) uint8 square a training image contributes under ``data.resize`` and its content's
    half-extents in it (see :meth:`BatchAugment.params`): the centre square (``crop``), the whole image letterboxed
    with ``fill`` (``pad``), or stretched (``stretch``). The cache stores images at that size already; others are
    resized here (slow: a PIL resize per image)."""
    if resize == "crop":
        return center_square(image, side), (1.0, 1.0)
    height, width = image.shape[:2]
    if resize == "stretch":
        if (height, width) != (side, side):
            image = np.asarray(Image.fromarray(image).resize((side, side), Image.Resampling.BILINEAR))
        return image, (1.0, 1.0)
    if max(height, width) != side:
        long = max(height, width)
        width, height = max(1, int(side * width / long)), max(1, int(side * height / long))
        image = np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))
    square = np.empty((side, side, 3), dtype=np.uint8)
    square[:] = np.asarray(fill, dtype=np.uint8)
    top, left = (side - height) // 2, (side - width) // 2
    square[top:top + height, left:left + width] = image
    return square, (width / side, height / side)


class Pending(NamedTuple):
    """A batch whose augmentation runs later, on the training device: uint8 pixels and per-sample params."""

    pixels: torch.Tensor  # (N, 3, S, S) uint8
    params: torch.Tensor  # (N, NUM_PARAMS) float64


def augment_batch(augment: BatchAugment, squares: Sequence[np.ndarray], seeds: Sequence[int], *,
                  defer: bool = False, content: np.ndarray | None = None) -> torch.Tensor | Pending:
    """Stack (S, S, 3) uint8 squares and augment them with each sample's parameters (``content``: their images'
    half-extents, from :func:`make_square`); with ``defer``, return them as :class:`Pending` for
    :func:`to_device` to augment on the training device (4x fewer bytes cross from the workers, and the GPU does
    the arithmetic)."""
    pixels = torch.from_numpy(np.stack(squares)).permute(0, 3, 1, 2)  # a copy: squares may be read-only views
    params = torch.from_numpy(augment.params(seeds, content))
    if defer:
        return Pending(pixels.contiguous(), params)
    shape = (len(squares), 3, augment.image_size, augment.image_size)
    if torch.utils.data.get_worker_info() is not None:
        # in a loader worker, fill a tensor in shared memory (as default_collate does), so sending it to the
        # main process copies nothing
        storage = torch.UntypedStorage._new_shared(math.prod(shape))
        out = torch.empty(0, dtype=torch.uint8).set_(storage).view(shape)
    else:
        out = torch.empty(shape, dtype=torch.uint8)
    # a few images at a time: small temporaries keep the worker's heap small (see
    # plantpheno.data.datasets.fixed_malloc_mmap_threshold) and in cache
    chunk = chunk_size(pixels.shape[-1], augment.image_size)
    for start in range(0, len(squares), chunk):
        augment.pixels(pixels[start:start + chunk], params[start:start + chunk], out=out[start:start + chunk])
    return out


CHUNK_BYTES = 5 << 20


def chunk_size(source: int, size: int) -> int:
    """Images augmented together: as many as keep the float temporaries (source, grid, output: ~4 * (3 * source^2
    + 5 * size^2) bytes an image) within ``CHUNK_BYTES``. Measured on this project's 2-core machine (2 MiB of L2
    a core), grid_sample alone, ms an image: 128 px from 148 px, 8 at a time 0.114, 32 at a time 0.24; 224 px
    from 258 px, 2 at a time 0.35, 8 at a time 0.58, 32 at a time 0.83. Whole batches at 224 px also grew each
    worker's memory past 0.65 GiB."""
    per_image = 4 * (3 * source * source + 5 * size * size)
    return max(1, min(32, CHUNK_BYTES // per_image))


def to_device(images: torch.Tensor | Pending, device: torch.device, *, augment: BatchAugment | None,
              memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """Move a batch to ``device`` as normalised float: a :class:`Pending` batch is augmented there, and the uint8
    batches of :func:`augment_batch` are normalised there (with ``augment``'s mean and std)."""
    if isinstance(images, Pending) or images.dtype == torch.uint8:
        if augment is None:
            raise ValueError("a batch of uint8 pixels (augmented in the loader, or left for the device) reached a "
                             "loop without the loader's augmenter to finish it (see BatchFinish)")
        if isinstance(images, Pending):
            pixels = images.pixels.to(device, non_blocking=True)
            return augment(pixels, images.params.to(device, non_blocking=True)).contiguous(memory_format=memory_format)
        return augment.normalise(images.to(device, non_blocking=True), memory_format)
    return images.to(device, non_blocking=True, memory_format=memory_format)


@dataclass(frozen=True)
class BatchedAugmentation:
    """How a training dataset augments whole batches: the augmenter, the stored image size it reads, and
    whether the augmentation is left for the training device (``data.augment.on_device``)."""

    augment: BatchAugment
    spec: CacheSpec
    on_device: bool


@dataclass(frozen=True)
class BatchFinish:
    """The finishing step of a set of loaders: moves a batch to the training device as normalised float.

    Loaders whose dataset augments whole batches send uint8 pixels (or a :class:`Pending` batch to augment
    on the device); ``augment`` finishes them. Other batches (float images, cached features) only move."""

    augment: BatchAugment | None = None

    def __call__(self, images: torch.Tensor | Pending, device: torch.device, *,
                 memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
        return to_device(images, device, augment=self.augment, memory_format=memory_format)
