"""Batched augmentation on the trial's device, from cached uint8 images.

Training: RandomResizedCrop(size, scale, ratio) + horizontal flip, with torchvision's parameter
sampling (area and log-ratio, ten tries, then a centre crop of clamped ratio), drawn for the whole
batch at once, and the crops resampled in ONE ``grid_sample`` call over the padded batch. Evaluation
images are cropped once when cached (Resize(size / crop_pct) + CenterCrop(size)), so at evaluation
only the normalisation runs. Mean and std come from the backbone's pretrained config.

The crop-resize samples the source without antialiasing; the cache already stores images at about
the training resolution (shorter side = the eval resize, 256 for 224), so crops are downscaled by at
most that factor.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["BatchAugment", "normalise", "sample_crop_boxes", "eval_resize_for", "Interpolation"]

Interpolation = Literal["bicubic", "bilinear"]


def eval_resize_for(size: int, crop_pct: float = 0.875) -> int:
    """The Resize() before CenterCrop(size): 256 for 224 at the standard crop_pct."""
    return int(math.floor(size / crop_pct))


def normalise(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (or float in [0, 255]) (B, 3, H, W) -> float32 normalised, on the images' device."""
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1) * 255
    std_t = torch.as_tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1) * 255
    return (images.float() - mean_t) / std_t


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


@dataclass
class BatchAugment:
    """RandomResizedCrop + flip + normalise for a padded uint8 batch, in one resampling call."""

    size: int
    mean: Sequence[float]
    std: Sequence[float]
    interpolation: Interpolation = "bicubic"
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5

    def __call__(self, images: torch.Tensor, sizes: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        """``images``: uint8 (B, 3, Hp, Wp), image b valid in [:sizes[b,0], :sizes[b,1]]."""
        batch, _, pad_h, pad_w = images.shape
        heights, widths = sizes[:, 0].astype(np.float64), sizes[:, 1].astype(np.float64)
        x0, y0, w, h = sample_crop_boxes(heights, widths, rng, self.scale, self.ratio).T
        flip = rng.random(batch) < self.flip_p
        # Affine map from output coords in [-1, 1] to the padded input (align_corners=False).
        theta = np.zeros((batch, 2, 3))
        theta[:, 0, 0] = np.where(flip, -w, w) / pad_w
        theta[:, 0, 2] = (2 * x0 + w) / pad_w - 1
        theta[:, 1, 1] = h / pad_h
        theta[:, 1, 2] = (2 * y0 + h) / pad_h - 1
        device = images.device
        theta_t = torch.as_tensor(theta, dtype=torch.float32, device=device)
        grid = F.affine_grid(theta_t, [batch, 3, self.size, self.size], align_corners=False)
        # Keep samples inside each image's own pixels, never in the padding.
        high_x = torch.as_tensor((2 * widths - 1) / pad_w - 1, dtype=torch.float32, device=device).view(-1, 1, 1)
        high_y = torch.as_tensor((2 * heights - 1) / pad_h - 1, dtype=torch.float32, device=device).view(-1, 1, 1)
        low_x, low_y = 1 / pad_w - 1, 1 / pad_h - 1
        grid = torch.stack([torch.maximum(torch.minimum(grid[..., 0], high_x), torch.tensor(low_x, device=device)),
                            torch.maximum(torch.minimum(grid[..., 1], high_y), torch.tensor(low_y, device=device))], -1)
        out = F.grid_sample(images.float(), grid, mode=self.interpolation, padding_mode="border", align_corners=False)
        return normalise(out.clamp_(0, 255), self.mean, self.std)  # bicubic overshoots, as uint8 would clip
