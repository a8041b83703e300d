"""Image lists with labels, the unit every reader produces and every later stage consumes."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..errors import DatasetError

__all__ = ["ImageList", "Benchmark", "ExpectedCounts", "DatasetError", "DatasetCountWarning", "check_counts"]



class DatasetCountWarning(UserWarning):
    """A dataset's class or image count differs from the standard split's."""


@dataclass(frozen=True)
class ImageList:
    """Absolute image paths with integer labels (the dataset's own class or item ids)."""

    paths: tuple[str, ...]
    labels: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", np.asarray(self.labels, dtype=np.int64))
        if len(self.paths) != len(self.labels):
            raise ValueError(f"{len(self.paths)} paths but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def classes(self) -> np.ndarray:
        return np.unique(self.labels)

    def subset(self, mask: np.ndarray) -> "ImageList":
        keep = np.flatnonzero(mask)
        return ImageList(tuple(self.paths[i] for i in keep), self.labels[keep])

    def with_classes(self, classes: np.ndarray) -> "ImageList":
        return self.subset(np.isin(self.labels, classes))


@dataclass(frozen=True)
class Benchmark:
    """A dataset's standard split: training images, and the test set.

    Test is leave-one-out over ``test`` (CUB, Cars, SOP, iNat) or query -> gallery when ``gallery``
    is given (In-Shop, where ``test`` holds the queries and labels are shared item ids).
    """

    name: str
    train: ImageList
    test: ImageList
    gallery: Optional[ImageList] = None
    #: The dataset folder, absolute (set by ``load_benchmark``): the fingerprint hashes paths relative to it.
    root: Optional[str] = None


@dataclass(frozen=True)
class ExpectedCounts:
    """The standard split's sizes; gallery fields only for query -> gallery datasets."""

    train_classes: int
    train_images: int
    test_classes: int
    test_images: int
    gallery_images: Optional[int] = None


def check_counts(benchmark: Benchmark, expected: ExpectedCounts) -> list[str]:
    """Warn (DatasetCountWarning) for every count that differs from the standard split; return the messages."""
    test_classes = benchmark.test.classes
    if benchmark.gallery is not None:
        test_classes = np.union1d(test_classes, benchmark.gallery.classes)
    found = {
        "training classes": (len(benchmark.train.classes), expected.train_classes),
        "training images": (len(benchmark.train), expected.train_images),
        "test classes": (len(test_classes), expected.test_classes),
        "test images" if benchmark.gallery is None else "query images": (len(benchmark.test), expected.test_images),
    }
    if benchmark.gallery is not None and expected.gallery_images is not None:
        found["gallery images"] = (len(benchmark.gallery), expected.gallery_images)
    messages = []
    for what, (got, want) in found.items():
        if got != want:
            messages.append(f"{benchmark.name}: found {got:,} {what}, expected {want:,}")
            warnings.warn(messages[-1], DatasetCountWarning, stacklevel=3)
    return messages
