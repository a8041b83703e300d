"""Batches for training and evaluation, straight from the image caches.

Training: the class-balanced sampler picks indices, a background thread assembles the next padded
uint8 batch from the memory-mapped cache while the device works on the current one, and the batched
augmentation runs on the device. Evaluation: fixed crops in order, normalised on the device.
Randomness depends only on (seed, epoch), so a resumed run sees the same batches.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, Sequence

import numpy as np
import torch

from .cache import EvalImageCache, TrainImageCache
from .sampler import ClassBalancedBatchSampler
from .transforms import BatchAugment, normalise

__all__ = ["TrainLoader", "eval_batches"]


class TrainLoader:
    """Augmented (images, labels) batches on ``device``; labels are contiguous class indices [0, C)."""

    def __init__(self, cache: TrainImageCache, batch_size: int, samples_per_class: int, augment: BatchAugment,
                 device: torch.device | str = "cpu", seed: int = 0, prefetch: int = 2) -> None:
        self.cache, self.augment, self.device, self.seed, self.prefetch = cache, augment, torch.device(device), seed, prefetch
        self.classes, self.targets = np.unique(cache.labels, return_inverse=True)
        self.sampler = ClassBalancedBatchSampler(self.targets, batch_size, samples_per_class, seed)
        self.epoch = 0

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def _host_batch(self, indices: list[int]) -> tuple[torch.Tensor, np.ndarray, torch.Tensor]:
        idx = np.asarray(indices)
        pixels, sizes = self.cache.batch(idx)
        images = torch.from_numpy(pixels)
        if self.device.type == "cuda":
            images = images.pin_memory()
        return images, sizes, torch.from_numpy(self.targets[idx])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        rng = np.random.default_rng([self.seed, self.epoch, 1])
        batches = iter(self.sampler)
        with ThreadPoolExecutor(1) as pool:
            pending = [pool.submit(self._host_batch, b) for b, _ in zip(batches, range(self.prefetch))]
            while pending:
                images, sizes, labels = pending.pop(0).result()
                following = next(batches, None)
                if following is not None:
                    pending.append(pool.submit(self._host_batch, following))
                images = images.to(self.device, non_blocking=True)
                yield self.augment(images, sizes, rng), labels.to(self.device, non_blocking=True)


def eval_batches(cache: EvalImageCache, batch_size: int, mean: Sequence[float], std: Sequence[float],
                 device: torch.device | str = "cpu") -> Iterator[torch.Tensor]:
    """Normalised (B, 3, S, S) float batches of the cached crops, in order."""
    device = torch.device(device)
    for start in range(0, len(cache), batch_size):
        chunk = torch.from_numpy(np.array(cache.pixels[start:start + batch_size]))  # a writable copy
        if device.type == "cuda":
            chunk = chunk.pin_memory()
        yield normalise(chunk.to(device, non_blocking=True).permute(0, 3, 1, 2), mean, std)
