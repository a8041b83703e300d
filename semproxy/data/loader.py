"""Batches for training and evaluation, straight from the image caches.

Training: the class-balanced sampler picks indices and a background thread prepares the next batch
from the memory-mapped cache while the device works on the current one: for a GPU the padded uint8
batch, augmented there in one batched call; for the CPU the augmented uint8 crops themselves. The
thread also groups the batch's classes (``BatchClasses``), so the step needs no device sync for it.
Evaluation: fixed crops in order, normalised on the device.
Randomness depends only on (seed, epoch), so a resumed run sees the same batches.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator, NamedTuple, Sequence

import numpy as np
import torch

from .batch_classes import BatchClasses
from .cache import EvalImageCache, TrainImageCache
from .sampler import ClassBalancedBatchSampler
from .transforms import BatchAugment, normalise

__all__ = ["TrainLoader", "TrainBatch", "eval_batches"]


class TrainBatch(NamedTuple):
    """One training batch on the device: images, class indices and their host-built grouping."""

    images: torch.Tensor
    labels: torch.Tensor
    groups: BatchClasses


class TrainLoader:
    """Augmented :class:`TrainBatch` objects on ``device``; labels are contiguous class indices [0, C)."""

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

    def _host_batch(self, indices: list[int], rng: np.random.Generator) -> tuple[torch.Tensor, Any, torch.Tensor, BatchClasses]:
        """Host side of a batch: S x S uint8 crops for a CPU device, else the padded uint8 batch."""
        idx = np.asarray(indices)
        labels = torch.from_numpy(self.targets[idx])
        groups = BatchClasses.from_labels(labels)
        params = self.augment.sample(self.cache.shapes[idx], rng)
        if self.device.type == "cpu":
            return self.augment.on_host([self.cache.image(i) for i in idx], params), None, labels, groups
        pixels, sizes = self.cache.batch(idx)
        images = torch.from_numpy(pixels)
        if self.device.type == "cuda":  # page-locked, so the copies below do not block the host
            images, labels, groups = images.pin_memory(), labels.pin_memory(), groups.pin_memory()
        return images, (sizes, params), labels, groups

    def __iter__(self) -> Iterator[TrainBatch]:
        rng = np.random.default_rng([self.seed, self.epoch, 1])  # used by the one host thread, in batch order
        batches = iter(self.sampler)
        with ThreadPoolExecutor(1) as pool:
            # range first: zip(batches, range(n)) would pull, and drop, an (n+1)-th batch
            pending = [pool.submit(self._host_batch, b, rng) for _, b in zip(range(self.prefetch), batches)]
            while pending:
                images, device_work, labels, groups = pending.pop(0).result()
                following = next(batches, None)
                if following is not None:
                    pending.append(pool.submit(self._host_batch, following, rng))
                images = images.to(self.device, non_blocking=True)
                if device_work is None:
                    images = normalise(images, self.augment.mean, self.augment.std)
                else:
                    images = self.augment.on_device(images, *device_work)
                yield TrainBatch(images, labels.to(self.device, non_blocking=True),
                                 groups.to(self.device, non_blocking=True))


def eval_batches(cache: EvalImageCache, batch_size: int, mean: Sequence[float], std: Sequence[float],
                 device: torch.device | str = "cpu") -> Iterator[torch.Tensor]:
    """Normalised (B, 3, S, S) float batches of the cached crops, in order."""
    device = torch.device(device)
    for start in range(0, len(cache), batch_size):
        chunk = torch.from_numpy(np.array(cache.pixels[start:start + batch_size]))  # a writable copy
        if device.type == "cuda":
            chunk = chunk.pin_memory()
        yield normalise(chunk.to(device, non_blocking=True).permute(0, 3, 1, 2), mean, std)
