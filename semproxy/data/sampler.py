"""Class-balanced batches: B/K distinct classes with K adjacent samples each (Proxy-Anchor's sampler).

The semantic-proxy accumulator steps through a class's K samples in batch order, so they must be
adjacent. An epoch is len(train) // B batches. A class with fewer than K images contributes its
images with repetition. Batches depend only on (seed, epoch), so a resumed run sees the same ones.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from ..config import ConfigError

__all__ = ["ClassBalancedBatchSampler", "check_batch_shape"]


def check_batch_shape(batch_size: int, samples_per_class: int, num_classes: int, num_images: int) -> None:
    """Raise a one-line ConfigError unless class-balanced batches of this shape can be drawn from a
    training split of ``num_classes`` classes and ``num_images`` images."""
    if samples_per_class < 1 or batch_size % samples_per_class:
        raise ConfigError(f"batch_size {batch_size} is not a multiple of samples_per_class {samples_per_class}")
    classes_per_batch = batch_size // samples_per_class
    if classes_per_batch > num_classes:
        raise ConfigError(f"batch_size {batch_size} / samples_per_class {samples_per_class} = {classes_per_batch} "
                          f"classes per batch, but the training split has only {num_classes} classes; lower "
                          f"batch_size or raise samples_per_class")
    if num_images < batch_size:
        raise ConfigError(f"batch_size {batch_size} exceeds the {num_images} training images")


class ClassBalancedBatchSampler:
    """Yields lists of dataset indices; call :meth:`set_epoch` before iterating each epoch."""

    def __init__(self, labels: np.ndarray, batch_size: int, samples_per_class: int, seed: int = 0) -> None:
        labels = np.asarray(labels)
        classes, inverse = np.unique(labels, return_inverse=True)
        check_batch_shape(batch_size, samples_per_class, len(classes), len(labels))
        self.classes_per_batch = batch_size // samples_per_class
        self.batch_size, self.samples_per_class, self.seed = batch_size, samples_per_class, seed
        order = np.argsort(inverse, kind="stable")
        counts = np.bincount(inverse)
        self._members = np.split(order, np.cumsum(counts)[:-1])
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return sum(len(m) for m in self._members) // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        k = self.samples_per_class
        for _ in range(len(self)):
            chosen = rng.choice(len(self._members), self.classes_per_batch, replace=False)
            batch = []
            for c in chosen:
                members = self._members[c]
                batch.extend(rng.choice(members, k, replace=len(members) < k).tolist())
            yield batch
