"""Batched augmentation on the trial's device, from cached uint8 images.

Training: RandomResizedCrop(size, scale, ratio) + horizontal flip, with torchvision's parameter
sampling (area and log-ratio, ten tries, then a centre crop of clamped ratio), drawn for the whole
batch at once; on a GPU the crops are resampled in ONE ``grid_sample`` call over the padded batch. Evaluation
images are cropped once when cached (Resize(size / crop_pct) + CenterCrop(size)), so at evaluation
only the normalisation runs. Mean and std come from the backbone's pretrained config.

The device resampling is split in two so that the host never waits for the device:
:meth:`BatchAugment.crop_grid` turns the crops into a few small tensors on the host (a
:class:`CropGrid`, copied with the batch), and :meth:`BatchAugment.resample` runs the batched work
on the device. Its result depends only on the padded uint8 batch and the grid, never on where the
batch was assembled (on the host, or from a cache held on the device).

On the GPU the crop-resize samples the source without antialiasing; the cache already stores images
at about the training resolution (shorter side = the eval resize, 256 for 224), so crops are
downscaled by at most that factor. On the CPU the crops are resized with antialiasing
(:meth:`BatchAugment.on_host`): the same crops and flips, slightly different pixels.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["BatchAugment", "CropParams", "CropGrid", "normalise", "sample_crop_boxes", "eval_resize_for",
           "Interpolation"]

Interpolation = Literal["bicubic", "bilinear"]


def eval_resize_for(size: int, crop_pct: float = 0.875) -> int:
    """The Resize() before CenterCrop(size): 256 for 224 at the standard crop_pct."""
    return int(math.floor(size / crop_pct))


def normalise(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (or float in [0, 255]) (B, 3, H, W) -> float32 normalised, on the images' device.

    One conversion and two in-place passes: (x / 255 - mean) / std = x * scale + shift.
    """
    return _normalise_(images.to(torch.float32, copy=True), mean, std)


def _normalise_(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """:func:`normalise` of a float32 batch, in place."""
    scale, shift = _scale_shift(tuple(mean), tuple(std), images.device)
    return images.mul_(scale).add_(shift)


@functools.lru_cache(maxsize=32)
def _scale_shift(mean: tuple[float, ...], std: tuple[float, ...],
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(1 / (255 std), -mean / std) as (1, C, 1, 1) float32 on ``device``, made once per device: made
    per batch, they would be copies from pageable host memory, which make the host wait for the GPU."""
    std_t = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    mean_t = torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    return (1.0 / (255.0 * std_t)).to(device), (-mean_t / std_t).to(device)


def sample_crop_boxes(heights: np.ndarray, widths: np.ndarray, rng: np.random.Generator,
                      scale: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
                      tries: int = 10) -> np.ndarray:
    """RandomResizedCrop boxes (x0, y0, w, h) in pixels for a batch of image sizes, vectorised."""
    n = len(heights)
    area = (heights * widths).astype(np.float64)
    target = area[:, None] * rng.uniform(scale[0], scale[1], (n, tries))
    aspect = np.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1]), (n, tries)))
    w = np.round(np.sqrt(target * aspect))
    h = np.round(np.sqrt(target / aspect))
    ok = (w > 0) & (h > 0) & (w <= widths[:, None]) & (h <= heights[:, None])
    first = np.where(ok.any(1), ok.argmax(1), -1)
    rows = np.arange(n)
    w_pick, h_pick = w[rows, first], h[rows, first]
    # fallback: torchvision's centre crop with the ratio clamped to the allowed range
    in_ratio = widths / heights
    fb_w = np.where(in_ratio < ratio[0], widths, np.where(in_ratio > ratio[1], np.round(heights * ratio[1]), widths))
    fb_h = np.where(in_ratio < ratio[0], np.round(widths / ratio[0]), heights)
    use_fb = first < 0
    w_pick, h_pick = np.where(use_fb, fb_w, w_pick), np.where(use_fb, fb_h, h_pick)
    x0 = np.where(use_fb, (widths - w_pick) // 2, np.floor(rng.random(n) * (widths - w_pick + 1)))
    y0 = np.where(use_fb, (heights - h_pick) // 2, np.floor(rng.random(n) * (heights - h_pick + 1)))
    return np.stack([x0, y0, w_pick, h_pick], axis=1).astype(np.float64)


@dataclass(frozen=True)
class CropParams:
    """One batch's random crops (x0, y0, w, h in source pixels) and horizontal flips."""

    boxes: np.ndarray
    flip: np.ndarray


class CropGrid(NamedTuple):
    """A batch's crops as ``grid_sample`` sees them, built on the host (a few hundred bytes an image).

    ``theta`` maps output coordinates in [-1, 1] to the padded input (``affine_grid``,
    align_corners=False); sampling positions are clamped to [``low``, ``high``], each image's own
    pixel centres, so they never fall in the padding (bicubic's taps around them read the image's
    edge, which the padded batch repeats: ``semproxy.data.cache.EDGE``).
    """

    theta: torch.Tensor  # (B, 2, 3) float32
    low: torch.Tensor    # (1, 1, 1, 2) float32: the first pixel centre (x, y), the same for every image
    high: torch.Tensor   # (B, 1, 1, 2) float32: each image's last pixel centre (x, y)


@dataclass
class BatchAugment:
    """RandomResizedCrop + flip + normalise for a batch of cached uint8 images.

    Two executions of the same crops: :meth:`resample` (with its host half :meth:`crop_grid`;
    :meth:`on_device` does both) resamples a padded batch in one ``grid_sample`` call (the GPU
    paths: no per-image work on the host), and :meth:`on_host` resizes each crop with torchvision's
    antialiased uint8 kernels (the CPU path, several times faster there than ``grid_sample``) so
    that only S x S uint8 crops are handed over.
    """

    size: int
    mean: Sequence[float]
    std: Sequence[float]
    interpolation: Interpolation = "bicubic"
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5

    def sample(self, sizes: np.ndarray, rng: np.random.Generator) -> CropParams:
        """Crop boxes and flips for images of ``sizes`` (B, 2) = (height, width)."""
        heights, widths = sizes[:, 0].astype(np.float64), sizes[:, 1].astype(np.float64)
        boxes = sample_crop_boxes(heights, widths, rng, self.scale, self.ratio)
        return CropParams(boxes, rng.random(len(sizes)) < self.flip_p)

    def on_host(self, images: Sequence[np.ndarray], params: CropParams) -> torch.Tensor:
        """uint8 (B, 3, S, S) crops of HWC uint8 images (views into the cache are fine)."""
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms.v2 import functional as TF

        mode = InterpolationMode.BICUBIC if self.interpolation == "bicubic" else InterpolationMode.BILINEAR
        out = torch.empty(len(images), 3, self.size, self.size, dtype=torch.uint8)
        for slot, (image, (x0, y0, w, h), flip) in enumerate(zip(images, params.boxes, params.flip)):
            chw = torch.from_numpy(np.array(image[int(y0):int(y0 + h), int(x0):int(x0 + w)])).permute(2, 0, 1)  # a copy
            crop = TF.resize(chw, [self.size, self.size], interpolation=mode, antialias=True)
            out[slot] = crop.flip(-1) if flip else crop
        return out

    def crop_grid(self, sizes: np.ndarray, params: CropParams, padded: tuple[int, int]) -> CropGrid:
        """The :class:`CropGrid` of crops ``params`` of images of ``sizes`` (B, 2) in a batch padded to
        ``padded`` = (height, width); plain arithmetic on the host, no device involved."""
        pad_h, pad_w = padded
        heights, widths = sizes[:, 0].astype(np.float64), sizes[:, 1].astype(np.float64)
        x0, y0, w, h = params.boxes.T
        theta = np.zeros((len(sizes), 2, 3))
        theta[:, 0, 0] = np.where(params.flip, -w, w) / pad_w
        theta[:, 0, 2] = (2 * x0 + w) / pad_w - 1
        theta[:, 1, 1] = h / pad_h
        theta[:, 1, 2] = (2 * y0 + h) / pad_h - 1
        high = np.stack([(2 * widths - 1) / pad_w - 1, (2 * heights - 1) / pad_h - 1], 1)
        low = np.array([1 / pad_w - 1, 1 / pad_h - 1])

        def tensor(values: np.ndarray, *shape: int) -> torch.Tensor:
            return torch.from_numpy(values.astype(np.float32)).view(*shape)

        return CropGrid(tensor(theta, -1, 2, 3), tensor(low, 1, 1, 1, 2), tensor(high, -1, 1, 1, 2))

    def resample(self, images: torch.Tensor, grid: CropGrid) -> torch.Tensor:
        """Normalised float (B, 3, S, S) from a padded uint8 batch and its grid, both on the same device.

        The batched device work of a training batch: one ``affine_grid``, the clamp into each image,
        one ``grid_sample`` (no antialiasing), the clip to [0, 255] and the normalisation.
        """
        sampling = F.affine_grid(grid.theta, [images.shape[0], 3, self.size, self.size], align_corners=False)
        sampling = torch.minimum(torch.maximum(sampling, grid.low), grid.high)
        out = F.grid_sample(images.float(), sampling, mode=self.interpolation, padding_mode="border",
                            align_corners=False)
        return _normalise_(out.clamp_(0, 255), self.mean, self.std)  # bicubic overshoots, as uint8 would clip

    def on_device(self, images: torch.Tensor, sizes: np.ndarray, params: CropParams) -> torch.Tensor:
        """Normalised float (B, 3, S, S) from a padded uint8 batch (image b valid in [:h_b, :w_b])."""
        grid = self.crop_grid(sizes, params, tuple(images.shape[-2:]))
        return self.resample(images, CropGrid(*(t.to(images.device) for t in grid)))

    def __call__(self, images: torch.Tensor, sizes: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        """Sample crops and apply them to a padded uint8 batch with the device path."""
        return self.on_device(images, sizes, self.sample(sizes, rng))
