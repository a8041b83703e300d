"""Decode every image once into uint8 arrays on disk, memory-mapped read-only by every trial.

Two kinds of cache, each a folder named by a hash of its inputs (file list, labels, each file's size
and mtime, image sizes, interpolation), written to a temporary folder and renamed into place when
complete, so a crash never leaves half a cache and concurrent builders do not collide; a replaced or
repaired image gives a new cache. The free space is checked and the pixel file's blocks reserved
before decoding, so a full disk is a one-line error naming ``cache_dir``, never a SIGBUS:

- training images, shorter side resized to ``short_side`` (longer side capped at twice that),
  kept with their own shapes in one flat buffer: random crops still see the whole image;
- evaluation images, resized and centre-cropped once to a fixed (N, S, S, 3) array.

Trials on one node map the same files, so the operating system's page cache holds one copy for all
of them (no private copies, no JPEG decoding per epoch). A training cache small enough can also be
held on a GPU as it is stored (:class:`DeviceTrainImages`), so that batches are gathered there.
Unreadable images are reported by path and skipped, with a clear error when more than
``max_bad_fraction`` of them fail.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Optional, TypeVar

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from .files import allocate_npy, format_bytes, is_disk_full, make_folder, staged
from .records import DatasetError, ImageList
from .transforms import Interpolation

__all__ = ["TrainImageCache", "EvalImageCache", "DeviceTrainImages", "PaddedRows", "EDGE", "build_train_cache",
           "build_eval_cache", "default_cache_dir", "UnreadableImageWarning"]

CACHE_VERSION = 1
#: Rows and columns of a padded batch that repeat an image's edge. A training crop samples each image
#: no further than its last pixel centre, and bicubic resampling reads two pixels on from there (with
#: weights zero at exactly that centre, but float rounding lands beside it): zeros there would darken
#: the edges of every image narrower or shorter than its batch.
EDGE = 2
_FILTERS = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}
T = TypeVar("T")


class UnreadableImageWarning(UserWarning):
    """Images that could not be decoded were skipped."""


def default_cache_dir() -> Path:
    return Path(os.environ.get("SEMPROXY_CACHE", Path.home() / ".cache" / "semproxy" / "images"))


@dataclass
class _MappedImages:
    """What both caches share: the kept images' labels and paths, and the folder their pixels live in.

    Pickles by folder: a trial on the same node maps the same files instead of copying pixels.
    """

    labels: np.ndarray
    paths: tuple[str, ...]
    folder: Path

    def __len__(self) -> int:
        return len(self.labels)

    def __reduce__(self):
        return _OPENERS[type(self)], (self.folder, self.labels, self.paths)


@dataclass
class TrainImageCache(_MappedImages):
    """Variable-size uint8 HWC images in one flat memory-mapped buffer."""

    pixels: np.ndarray = None     # flat uint8
    offsets: np.ndarray = None    # (N,) start of each image in ``pixels``
    shapes: np.ndarray = None     # (N, 2) height, width

    def image(self, index: int) -> np.ndarray:
        h, w = self.shapes[index]
        start = self.offsets[index]
        return self.pixels[start:start + h * w * 3].reshape(h, w, 3)

    def batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A padded (B, 3, Hmax, Wmax) uint8 batch and the (B, 2) valid sizes.

        Each image's last column and then its last row are repeated once into the padding, zeros
        beyond (:data:`EDGE`): resampling reads it as it would the image alone.
        """
        sizes = self.shapes[indices]
        out = np.zeros((len(indices), 3, sizes[:, 0].max(), sizes[:, 1].max()), dtype=np.uint8)
        for slot, index in enumerate(indices):
            h, w = sizes[slot]
            out[slot, :, :h, :w] = self.image(index).transpose(2, 0, 1)
            out[slot, :, :h, w:w + EDGE] = out[slot, :, :h, w - 1:w]  # empty where the image fills the width
            out[slot, :, h:h + EDGE, :w + EDGE] = out[slot, :, h - 1:h, :w + EDGE]
        return out, sizes


class PaddedRows(NamedTuple):
    """Where each row and column of a padded (B, 3, H, W) batch comes from in a :class:`DeviceTrainImages`
    buffer: built on the host from the cache's offsets and shapes, a few kB a batch.

    Row y of image b starts at byte ``starts[b, y]`` (its last row again just below it; further rows
    start in the buffer's zero tail, so they read zeros). Column x is the row's pixel
    ``columns[b, x]`` (its last one again just right of it), kept where ``valid[b, x]``, zero elsewhere.
    """

    starts: torch.Tensor   # (B, H) int64
    columns: torch.Tensor  # (B, W) int64
    valid: torch.Tensor    # (B, W) bool

    @property
    def padded(self) -> tuple[int, int]:
        """The batch's padded (height, width)."""
        return self.starts.shape[1], self.valid.shape[1]


@dataclass(frozen=True)
class DeviceTrainImages:
    """A :class:`TrainImageCache`'s pixels held on a device exactly as the cache stores them.

    One flat uint8 tensor (followed by a zero tail as long as the widest image's row), the per-image
    offsets and shapes kept on the host. :meth:`rows` (host) and :meth:`batch` (device) give the same
    zero-padded uint8 batch as :meth:`TrainImageCache.batch`, byte for byte, gathered on the device
    in two kernels: the rows, read as windows of the flat buffer, then the columns past each image's
    width set to zero. Nothing per image runs on the host.
    """

    pixels: torch.Tensor   # (cache bytes + tail,) uint8 on the device
    offsets: np.ndarray    # (N,) start of each image in ``pixels``
    shapes: np.ndarray     # (N, 2) height, width
    zero_row: int          # where the zero tail starts

    @staticmethod
    def nbytes(cache: TrainImageCache) -> int:
        """Device bytes that holding ``cache`` takes: its pixels plus the zero tail."""
        return len(cache.pixels) + 3 * int(cache.shapes[:, 1].max(initial=0))

    @classmethod
    def upload(cls, cache: TrainImageCache, device: torch.device | str,
               chunk_bytes: int = 64 << 20) -> "DeviceTrainImages":
        """Copy ``cache`` to ``device``, ``chunk_bytes`` of the memory map at a time (bounded host memory)."""
        total = len(cache.pixels)
        pixels = torch.empty(cls.nbytes(cache), dtype=torch.uint8, device=device)
        pixels[total:].zero_()
        for start in range(0, total, chunk_bytes):
            chunk = np.array(cache.pixels[start:start + chunk_bytes])  # a writable copy of this part of the map
            pixels[start:start + len(chunk)].copy_(torch.from_numpy(chunk))
        return cls(pixels, cache.offsets, cache.shapes, total)

    def rows(self, indices: np.ndarray) -> PaddedRows:
        """The host half of a batch of images ``indices``: their :class:`PaddedRows` (CPU tensors)."""
        heights, widths = self.shapes[indices, 0, None], self.shapes[indices, 1, None]
        y, x = np.arange(heights.max()), np.arange(widths.max())
        starts = self.offsets[indices, None] + np.minimum(y, heights - 1) * (3 * widths)
        starts = np.where(y < heights + EDGE, starts, self.zero_row)
        columns = np.minimum(x, widths - 1)
        return PaddedRows(*(torch.from_numpy(a) for a in (starts.astype(np.int64), columns.astype(np.int64),
                                                           x < widths + EDGE)))

    def batch(self, rows: PaddedRows) -> torch.Tensor:
        """The device half: the padded (B, 3, H, W) uint8 batch, ``rows`` already on the device."""
        (batch, height), width = rows.starts.shape, rows.valid.shape[1]
        windows = self.pixels.unfold(0, 3 * width, 1)  # row r = pixels[r : r + 3W], a view: nothing is copied
        gathered = windows.index_select(0, rows.starts.reshape(-1)).view(batch, height, width, 3)
        gathered = gathered.gather(2, rows.columns.view(batch, 1, width, 1).expand(batch, height, width, 3))
        out = torch.empty((batch, 3, height, width), dtype=torch.uint8, device=self.pixels.device)
        return torch.mul(gathered.permute(0, 3, 1, 2), rows.valid.view(batch, 1, 1, width), out=out)


@dataclass
class EvalImageCache(_MappedImages):
    """Fixed-size uint8 (N, S, S, 3) crops, memory-mapped."""

    pixels: np.ndarray = None


def _open_train(folder: Path, labels: np.ndarray, paths: tuple[str, ...]) -> TrainImageCache:
    index = np.load(folder / "index.npz")
    return TrainImageCache(labels, paths, folder, pixels=np.load(folder / "pixels.npy", mmap_mode="r"),
                           offsets=index["offsets"], shapes=index["shapes"])


def _open_eval(folder: Path, labels: np.ndarray, paths: tuple[str, ...]) -> EvalImageCache:
    pixels = np.load(folder / "pixels.npy", mmap_mode="r")
    kept = np.load(folder / "index.npz")["kept"]
    if len(kept) < len(pixels):
        pixels = pixels[kept]  # a private copy of the good rows; rare (only with skipped images)
    return EvalImageCache(labels, paths, folder, pixels=pixels)


_OPENERS = {TrainImageCache: _open_train, EvalImageCache: _open_eval}


def _file_state(path: str) -> str:
    """Size and modification time, so a replaced or repaired image changes the cache key (one stat, ~3 us)."""
    try:
        stat = os.stat(path)
    except OSError:
        return "missing"
    return f"{stat.st_size}\t{stat.st_mtime_ns}"


def _cache_key(images: ImageList, **settings) -> str:
    """A hash of the settings and of each image's path, label, size and mtime."""
    digest = hashlib.sha256(json.dumps({"version": CACHE_VERSION, **settings}, sort_keys=True).encode())
    for path, label in zip(images.paths, images.labels.tolist()):
        digest.update(f"{path}\t{label}\t{_file_state(path)}\n".encode())
    return digest.hexdigest()[:24]


def _train_shape(height: int, width: int, short_side: int) -> tuple[int, int]:
    scale = short_side / min(height, width)
    scale = min(scale, 2 * short_side / max(height, width))  # cap very elongated images
    return max(1, round(height * scale)), max(1, round(width * scale))


def _resized_shape(height: int, width: int, short_side: int) -> tuple[int, int]:
    """torchvision's Resize(int): the shorter side becomes ``short_side``, the longer one truncated."""
    if height <= width:
        return short_side, int(short_side * width / height)
    return int(short_side * height / width), short_side


def _open_rgb(path: str, target: tuple[int, int]) -> Image.Image:
    image = Image.open(path)
    image.draft("RGB", (target[1], target[0]))  # JPEG DCT scaling: decode near the target size
    return image.convert("RGB")


def _header_size(path: str) -> Optional[tuple[int, int]]:
    try:
        with Image.open(path) as image:
            return image.height, image.width
    except Exception:  # noqa: BLE001 - any unreadable file is reported together below
        return None


def _check_bad(bad: list[str], total: int, max_bad_fraction: float, what: str) -> None:
    if not bad:
        return
    if len(bad) > max_bad_fraction * total:
        raise DatasetError(f"{what}: {len(bad)} of {total} images unreadable (more than {max_bad_fraction:.0%}), "
                           f"first: {bad[0]}")
    warnings.warn(f"{what}: skipped {len(bad)} unreadable image(s): {', '.join(bad[:3])}"
                  + (" ..." if len(bad) > 3 else ""), UnreadableImageWarning, stacklevel=3)


def _parallel(fn: Callable[[int], T], count: int, workers: int, desc: Optional[str] = None) -> list[T]:
    """``[fn(i) for i in range(count)]`` on ``workers`` threads; on any failure (Ctrl-C too) the
    calls not yet started are cancelled, so the caller can clean up at once."""
    pool = ThreadPoolExecutor(workers)
    try:
        results = pool.map(fn, range(count))
        return list(tqdm(results, total=count, desc=desc, leave=False) if desc else results)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _index_bytes(count: int) -> int:
    """Room for ``index.npz`` (three int64 arrays) and the files' block rounding."""
    return 32 * count + (64 << 10)


@contextmanager
def _building(cache_dir: Path, key: str, need: int, desc: str) -> Iterator[Path]:
    """A temporary folder in ``cache_dir`` for a cache of ``need`` bytes; the block renames it into place.

    The free space is checked first; the folder is removed on any failure; a disk that fills up
    meanwhile (another process) is the same one-line error as too little space up front.
    """
    make_folder(cache_dir, "cache_dir")
    if need > shutil.disk_usage(cache_dir).free:
        raise _too_full(cache_dir, need, desc)
    with staged(cache_dir / key) as tmp:
        try:
            yield tmp
        except OSError as error:
            if is_disk_full(error):  # said while the disk is still full: staged() frees it after
                raise _too_full(cache_dir, need, desc) from None
            raise


def _too_full(cache_dir: Path, need: int, desc: str) -> DatasetError:
    """What is full, what the cache needs and what is free now."""
    return DatasetError(f"cache_dir {cache_dir}: {desc} needs {format_bytes(need)}, "
                        f"{format_bytes(shutil.disk_usage(cache_dir).free)} free; free some space there or "
                        f"point cache_dir (or SEMPROXY_CACHE) at another disk")


def _publish(tmp: Path, final: Path) -> None:
    try:
        tmp.rename(final)
    except OSError:  # another process published the same cache first
        shutil.rmtree(tmp, ignore_errors=True)
        if not (final / "index.npz").is_file():
            raise DatasetError(f"cache folder {final} exists but is incomplete (no index.npz); delete it") from None


def build_train_cache(images: ImageList, short_side: int, *, cache_dir: Optional[Path] = None,
                      interpolation: Interpolation = "bicubic", workers: int = 4,
                      max_bad_fraction: float = 0.01, desc: str = "caching train images",
                      progress: bool = True) -> TrainImageCache:
    """Decode and resize ``images`` once (or reuse the cache) and map it read-only."""
    cache_dir = Path(cache_dir or default_cache_dir())
    key = _cache_key(images, kind="train", short_side=short_side, interpolation=interpolation)
    final = cache_dir / key
    if not (final / "index.npz").is_file():
        headers = _parallel(lambda i: _header_size(images.paths[i]), len(images), workers)
        bad = [p for p, s in zip(images.paths, headers) if s is None]
        kept = [i for i, s in enumerate(headers) if s is not None]
        shapes = np.array([_train_shape(*headers[i], short_side) for i in kept], dtype=np.int64).reshape(-1, 2)
        sizes = shapes[:, 0] * shapes[:, 1] * 3
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        total = int(sizes.sum())
        with _building(cache_dir, key, total + _index_bytes(len(kept)), desc) as tmp:
            pixels = allocate_npy(tmp / "pixels.npy", (total,))

            def decode(slot: int) -> Optional[str]:
                path = images.paths[kept[slot]]
                h, w = shapes[slot]
                try:
                    image = _open_rgb(path, (h, w)).resize((w, h), _FILTERS[interpolation])
                except Exception:  # noqa: BLE001 - e.g. a truncated JPEG whose header was fine
                    return path
                pixels[offsets[slot]:offsets[slot] + sizes[slot]] = np.asarray(image).reshape(-1)
                return None

            failed = _parallel(decode, len(kept), workers, desc if progress else None)
            good = np.array([f is None for f in failed], dtype=bool)
            bad += [f for f in failed if f is not None]
            _check_bad(bad, len(images), max_bad_fraction, desc)
            pixels.flush()
            del pixels
            kept_idx = np.asarray(kept, dtype=np.int64)[good]
            np.savez(tmp / "index.npz", offsets=offsets[good], shapes=shapes[good], kept=kept_idx)
            _publish(tmp, final)
    kept = np.load(final / "index.npz")["kept"]
    return _open_train(final, images.labels[kept], tuple(images.paths[i] for i in kept))


def build_eval_cache(images: ImageList, size: int, resize: int, *, cache_dir: Optional[Path] = None,
                     interpolation: Interpolation = "bicubic", workers: int = 4,
                     max_bad_fraction: float = 0.01, desc: str = "caching eval images",
                     progress: bool = True) -> EvalImageCache:
    """Resize(shorter side ``resize``) + CenterCrop(``size``) once per image (or reuse the cache)."""
    cache_dir = Path(cache_dir or default_cache_dir())
    key = _cache_key(images, kind="eval", size=size, resize=resize, interpolation=interpolation)
    final = cache_dir / key
    if not (final / "index.npz").is_file():
        shape = (len(images), size, size, 3)
        with _building(cache_dir, key, math.prod(shape) + _index_bytes(len(images)), desc) as tmp:
            pixels = allocate_npy(tmp / "pixels.npy", shape)

            def decode(index: int) -> Optional[str]:
                try:
                    image = Image.open(images.paths[index])
                    h, w = _resized_shape(image.height, image.width, resize)
                    image.draft("RGB", (w, h))
                    image = image.convert("RGB").resize((w, h), _FILTERS[interpolation])
                    top, left = int(round((h - size) / 2)), int(round((w - size) / 2))
                    pixels[index] = np.asarray(image.crop((left, top, left + size, top + size)))
                except Exception:  # noqa: BLE001 - reported together below
                    return images.paths[index]
                return None

            failed = _parallel(decode, len(images), workers, desc if progress else None)
            bad = [f for f in failed if f is not None]
            _check_bad(bad, len(images), max_bad_fraction, desc)
            pixels.flush()
            del pixels
            np.savez(tmp / "index.npz", kept=np.array([f is None for f in failed]).nonzero()[0])
            _publish(tmp, final)
    kept = np.load(final / "index.npz")["kept"]
    return _open_eval(final, images.labels[kept], tuple(images.paths[i] for i in kept))
