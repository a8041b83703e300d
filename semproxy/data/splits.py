"""Train / validation / test: validation classes are carved from the TRAINING classes.

The search optimises validation MAP@R, so the test classes are seen by nothing but the final
evaluation (the paper code picked epochs on the test set; this does not). The carve is
deterministic: the last ``val_fraction`` of the training classes in id order.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import PurePath
from typing import Optional

import numpy as np

from ..errors import ConfigError
from .records import Benchmark, ImageList

__all__ = ["DataSplits", "make_splits"]


@dataclass(frozen=True)
class DataSplits:
    """What training and evaluation see. ``val`` is None when ``val_fraction`` is 0 (final training)."""

    name: str
    train: ImageList
    val: Optional[ImageList]
    test: ImageList
    gallery: Optional[ImageList] = None   # In-Shop: ``test`` are the queries
    root: Optional[str] = None            # the dataset folder (absolute); see fingerprint

    def fingerprint(self) -> dict:
        """Class and image counts and a hash of the file lists, to record what a run used.

        The hash covers each split's name, each image's path relative to ``root`` (the dataset
        folder, ``/``-separated) and its label, in order: it identifies the data, not where it lives,
        so a byte-identical copy of the folder elsewhere has the same fingerprint. Image contents are
        not read. Without a ``root`` (splits not made from ``load_benchmark``) paths are hashed as given.
        """
        digest = hashlib.sha256()
        parts = {"train": self.train, "val": self.val, "test": self.test, "gallery": self.gallery}
        counts = {}
        for key, images in parts.items():
            if images is None:
                continue
            counts[key] = {"classes": int(len(images.classes)), "images": len(images)}
            for path, label in zip(images.paths, images.labels.tolist()):
                digest.update(f"{key}\t{self._relative(path)}\t{label}\n".encode())
        # 'paths' says how they were hashed: records written before they were relative had no such key.
        return {"dataset": self.name, "counts": counts, "files_sha256": digest.hexdigest(),
                "paths": "relative" if self.root is not None else "as given"}

    def _relative(self, path: str) -> str:
        if self.root is None:
            return path
        return PurePath(os.path.relpath(path, self.root)).as_posix()


def make_splits(benchmark: Benchmark, val_fraction: float = 0.2) -> DataSplits:
    """Carve ``round(val_fraction * training classes)`` validation classes off the training split."""
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"key 'val_fraction' must be in [0, 1), got {val_fraction}")
    classes = benchmark.train.classes
    num_val = int(round(val_fraction * len(classes)))
    if val_fraction > 0 and num_val < 2:
        raise ConfigError(f"{benchmark.name}: val_fraction {val_fraction} of {len(classes)} training classes "
                          f"gives {num_val} validation classes; retrieval needs at least 2")
    if len(classes) - num_val < 2:
        raise ConfigError(f"{benchmark.name}: val_fraction {val_fraction} leaves fewer than 2 training classes")
    val_classes = classes[len(classes) - num_val:]
    is_val = np.isin(benchmark.train.labels, val_classes)
    return DataSplits(
        name=benchmark.name,
        train=benchmark.train.subset(~is_val),
        val=benchmark.train.subset(is_val) if num_val else None,
        test=benchmark.test,
        gallery=benchmark.gallery,
        root=benchmark.root,
    )
