"""Batches for training and evaluation, straight from the image caches.

Training: the class-balanced sampler picks indices, and a background thread prepares the next batch
while the device works on the current one. It always draws the crops and flips (they depend only
on (seed, epoch), so a resumed run sees the same batches) and groups the batch's classes
(``BatchClasses``, from the labels on the host, so the step needs no device sync for it). What else
it prepares depends on the loader's :class:`DataPath`, chosen once per run by :func:`choose_path`:

- ``device-cache`` (a GPU, the training cache within ``device_cache_mb``): the whole uint8 cache is
  held on the device as it is stored; the thread only computes row offsets and the crop grid (a few
  kB), and the device gathers the padded batch and resamples it in one batched call.
- ``host-batch`` (a GPU, the cache too large): the thread assembles the padded uint8 batch from the
  memory map; it is copied and resampled on the device with the same call.
- ``host-crops`` (the CPU): the thread cuts and resizes the crops with antialiasing.

``device-cache`` and ``host-batch`` hand the same padded uint8 batch and crop grid to the same
:meth:`BatchAugment.resample`, so their images are equal pixel for pixel (on any device; the tests
check it on the CPU); a run may switch between them (``device_cache_mb`` may change on resume).
``host-crops`` draws the same crops and flips, but resizes them with antialiasing, so its pixels
differ slightly from the other two.

Evaluation: fixed crops in order, normalised on the device.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Literal, NamedTuple, Optional, Protocol, Sequence

import numpy as np
import torch

from .batch_classes import BatchClasses
from .cache import DeviceTrainImages, EvalImageCache, TrainImageCache
from .files import format_bytes
from .sampler import ClassBalancedBatchSampler
from .transforms import BatchAugment, CropParams, normalise

__all__ = ["TrainLoader", "TrainBatch", "DataPath", "choose_path", "eval_batches", "FREE_MEMORY_SHARE"]

PathName = Literal["device-cache", "host-batch", "host-crops"]

#: The share of a GPU's free memory (when the run starts) that a device cache may take at most, so
#: that trials packed on the GPU, which each hold their own copy, leave room for the models.
FREE_MEMORY_SHARE = 0.5


@dataclass(frozen=True)
class DataPath:
    """How a loader makes its training batches (``name``), and why it was chosen (``reason``)."""

    name: PathName
    reason: str

    @property
    def images_on_device(self) -> bool:
        """Whether the training images are held on the device (``device-cache``)."""
        return self.name == "device-cache"

    def __str__(self) -> str:
        return f"{self.name} ({self.reason})"


_ON_CPU = DataPath("host-crops", "a CPU crops the memory-mapped cache directly")


def choose_path(cache_bytes: int, device: torch.device, device_cache_mb: int, *,
                free_bytes: Optional[int] = None) -> DataPath:
    """The data path of a run whose training cache takes ``cache_bytes`` on ``device``.

    The CPU takes ``host-crops``: the memory-mapped cache already is in host memory, shared by
    every trial through the page cache, and antialiased crops are the faster resize there. Another
    device takes ``device-cache`` when the cache fits both ``device_cache_mb`` (MB of 10^6 bytes;
    0 turns it off) and :data:`FREE_MEMORY_SHARE` of the memory free on the device now
    (``free_bytes``; asked of CUDA when None, not checked on other devices), else ``host-batch``.
    """
    if device.type == "cpu":
        return _ON_CPU
    size = f"the {format_bytes(cache_bytes)} training cache"
    if cache_bytes > device_cache_mb * 10**6:
        return DataPath("host-batch", f"{size} exceeds device_cache_mb {device_cache_mb}")
    free = _free_bytes(device) if free_bytes is None else free_bytes
    share = f"{FREE_MEMORY_SHARE:.0%} of the {format_bytes(free)} free on {device}" if free is not None else ""
    if free is not None and cache_bytes > FREE_MEMORY_SHARE * free:
        return DataPath("host-batch", f"{size} exceeds {share}")
    return DataPath("device-cache", f"{size} fits device_cache_mb {device_cache_mb}" + (share and f" and {share}"))


def _free_bytes(device: torch.device) -> Optional[int]:
    """Bytes free on a CUDA device now (all processes counted); None for other devices."""
    return torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None


def _host_path(device: torch.device) -> DataPath:
    """The path of a loader given none: ``host-crops`` on the CPU, else ``host-batch``."""
    return _ON_CPU if device.type == "cpu" else DataPath("host-batch", "no device cache was asked for")


Work = tuple[Any, ...]  # what the loader thread prepares for one batch: tensors, or named tuples of them


class _Source(Protocol):
    """One data path: :meth:`prepare` runs on the loader thread, :meth:`finish` on the device's."""

    def prepare(self, indices: np.ndarray, params: CropParams) -> Work:
        """Host-side work of a batch of images ``indices`` with crops ``params``: CPU tensors only."""

    def finish(self, work: Work) -> torch.Tensor:
        """Normalised float (B, 3, S, S) images from ``work``, already moved to the device."""


class _FromHostCache:
    """A path that reads each batch's images from the memory-mapped cache on the loader thread."""

    def __init__(self, cache: TrainImageCache, augment: BatchAugment, device: torch.device) -> None:
        self.cache, self.augment = cache, augment


class _HostCrops(_FromHostCache):
    """``host-crops``: S x S crops cut and resized (antialiased) on the host; the device normalises."""

    def prepare(self, indices: np.ndarray, params: CropParams) -> Work:
        return (self.augment.on_host([self.cache.image(i) for i in indices], params),)

    def finish(self, work: Work) -> torch.Tensor:
        return normalise(work[0], self.augment.mean, self.augment.std)


class _HostBatch(_FromHostCache):
    """``host-batch``: the padded uint8 batch assembled on the host, resampled on the device."""

    def prepare(self, indices: np.ndarray, params: CropParams) -> Work:
        pixels, sizes = self.cache.batch(indices)
        return torch.from_numpy(pixels), self.augment.crop_grid(sizes, params, pixels.shape[-2:])

    def finish(self, work: Work) -> torch.Tensor:
        return self.augment.resample(*work)


class _DeviceCache:
    """``device-cache``: the cache held on the device; the padded batch is gathered there, resampled
    exactly as ``host-batch`` resamples its own."""

    def __init__(self, cache: TrainImageCache, augment: BatchAugment, device: torch.device) -> None:
        self.images, self.augment = DeviceTrainImages.upload(cache, device), augment

    def prepare(self, indices: np.ndarray, params: CropParams) -> Work:
        rows = self.images.rows(indices)
        return rows, self.augment.crop_grid(self.images.shapes[indices], params, rows.padded)

    def finish(self, work: Work) -> torch.Tensor:
        rows, grid = work
        return self.augment.resample(self.images.batch(rows), grid)


_SOURCES: dict[PathName, Callable[[TrainImageCache, BatchAugment, torch.device], _Source]] = {
    "host-crops": _HostCrops, "host-batch": _HostBatch, "device-cache": _DeviceCache}


def _map_tensors(fn: Callable[[torch.Tensor], torch.Tensor], work: Any) -> Any:
    """``work`` with ``fn`` applied to every tensor in it (tuples and named tuples, nested)."""
    if isinstance(work, torch.Tensor):
        return fn(work)
    items = [_map_tensors(fn, item) for item in work]
    return type(work)(*items) if hasattr(work, "_fields") else tuple(items)


class TrainBatch(NamedTuple):
    """One training batch on the device: images, class indices and their host-built grouping."""

    images: torch.Tensor
    labels: torch.Tensor
    groups: BatchClasses


class TrainLoader:
    """Augmented :class:`TrainBatch` objects on ``device``; labels are contiguous class indices [0, C).

    ``path`` is how batches are made (:func:`choose_path` decides it for a run; without one, the
    host paths of today: ``host-crops`` on the CPU, ``host-batch`` elsewhere). A ``device-cache``
    path uploads the cache here; when the device runs out of memory doing so, the loader falls back
    to ``host-batch`` and says so in :attr:`path`, which records the path taken. :attr:`host_seconds`
    adds up the time the loader thread spent preparing its :attr:`host_batches` batches (the host's
    share of the data path).
    """

    def __init__(self, cache: TrainImageCache, batch_size: int, samples_per_class: int, augment: BatchAugment,
                 device: torch.device | str = "cpu", seed: int = 0, prefetch: int = 2,
                 path: Optional[DataPath] = None) -> None:
        self.cache, self.augment, self.device = cache, augment, torch.device(device)
        self.seed, self.prefetch = seed, prefetch
        self.classes, self.targets = np.unique(cache.labels, return_inverse=True)
        self.sampler = ClassBalancedBatchSampler(self.targets, batch_size, samples_per_class, seed)
        self.epoch = 0
        self.host_seconds, self.host_batches = 0.0, 0  # the loader thread's time, and the batches it prepared
        self.path = path or _host_path(self.device)
        try:
            self._source = _SOURCES[self.path.name](cache, augment, self.device)
        except torch.OutOfMemoryError:  # another process took the memory since choose_path looked
            self.path = DataPath("host-batch", f"{self.path.reason}, but the upload ran out of device memory")
            self._source = _HostBatch(cache, augment, self.device)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def _host_batch(self, indices: list[int], rng: np.random.Generator) -> tuple[Work, torch.Tensor, BatchClasses]:
        """The loader thread's part of a batch: the path's work, the labels and their grouping."""
        start = time.perf_counter()
        idx = np.asarray(indices)
        labels = torch.from_numpy(self.targets[idx])
        groups = BatchClasses.from_labels(labels)
        work = self._source.prepare(idx, self.augment.sample(self.cache.shapes[idx], rng))
        if self.device.type == "cuda":  # page-locked, so the copies in __iter__ do not block the host
            work = _map_tensors(torch.Tensor.pin_memory, work)
            labels, groups = labels.pin_memory(), groups.pin_memory()
        self.host_seconds += time.perf_counter() - start
        self.host_batches += 1
        return work, labels, groups

    def __iter__(self) -> Iterator[TrainBatch]:
        rng = np.random.default_rng([self.seed, self.epoch, 1])  # used by the one host thread, in batch order
        batches = iter(self.sampler)
        with ThreadPoolExecutor(1) as pool:
            # range first: zip(batches, range(n)) would pull, and drop, an (n+1)-th batch
            pending = [pool.submit(self._host_batch, b, rng) for _, b in zip(range(self.prefetch), batches)]
            while pending:
                work, labels, groups = pending.pop(0).result()
                following = next(batches, None)
                if following is not None:
                    pending.append(pool.submit(self._host_batch, following, rng))
                images = self._source.finish(_map_tensors(self._to_device, work))
                yield TrainBatch(images, self._to_device(labels), groups.to(self.device, non_blocking=True))

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(self.device, non_blocking=True)


def eval_batches(cache: EvalImageCache, batch_size: int, mean: Sequence[float], std: Sequence[float],
                 device: torch.device | str = "cpu") -> Iterator[torch.Tensor]:
    """Normalised (B, 3, S, S) float batches of the cached crops, in order."""
    device = torch.device(device)
    for start in range(0, len(cache), batch_size):
        chunk = torch.from_numpy(np.array(cache.pixels[start:start + batch_size]))  # a writable copy
        if device.type == "cuda":
            chunk = chunk.pin_memory()
        yield normalise(chunk.to(device, non_blocking=True).permute(0, 3, 1, 2), mean, std)
