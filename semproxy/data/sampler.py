"""Class-balanced batches: B/K distinct classes with K adjacent samples each (Proxy-Anchor's sampler).

The semantic-proxy accumulator steps through a class's K samples in batch order, so they must be
adjacent. An epoch is len(train) // B batches. A class with fewer than K images contributes its
images with repetition. Batches depend only on (seed, epoch), so a resumed run sees the same ones.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

__all__ = ["ClassBalancedBatchSampler"]


class ClassBalancedBatchSampler:
    """Yields lists of dataset indices; call :meth:`set_epoch` before iterating each epoch."""

    def __init__(self, labels: np.ndarray, batch_size: int, samples_per_class: int, seed: int = 0) -> None:
        labels = np.asarray(labels)
        if samples_per_class < 1 or batch_size % samples_per_class:
            raise ValueError(f"batch_size {batch_size} is not a multiple of samples_per_class {samples_per_class}")
        classes, inverse = np.unique(labels, return_inverse=True)
        self.classes_per_batch = batch_size // samples_per_class
        if self.classes_per_batch > len(classes):
            raise ValueError(f"batch_size / samples_per_class = {self.classes_per_batch} classes per batch, "
                             f"but there are only {len(classes)} training classes")
        if len(labels) < batch_size:
            raise ValueError(f"batch_size {batch_size} exceeds the {len(labels)} training images")
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
