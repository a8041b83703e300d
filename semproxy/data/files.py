"""Filesystem steps the data pipeline shares: folders, staging beside the target, locks, reserved space.

Everything that publishes files (the image caches, the synthetic set) writes into a temporary folder
beside its target and renames it into place, so a crash, a full disk or Ctrl-C never leaves half of
it visible; problems with the paths themselves become one-line :class:`DatasetError` messages.
"""
from __future__ import annotations

import errno
import fcntl
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from ..atomic import current_umask
from .records import DatasetError

__all__ = ["make_folder", "staged", "file_lock", "allocate_npy", "is_disk_full", "format_bytes"]


def make_folder(path: Path, what: str) -> Path:
    """Create ``path`` and its parents; a file in the way is a one-line error naming ``what`` and the file."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
        reason = f"{blocker} is a file, not a folder" if blocker is not None else error.strerror or str(error)
        raise DatasetError(f"{what} {path}: cannot create it ({reason})") from None
    return path


@contextmanager
def staged(target: Path) -> Iterator[Path]:
    """A fresh temporary folder beside ``target`` (same filesystem, so one rename publishes it).

    The folder is removed when the block fails for any reason, KeyboardInterrupt included; on success
    the block is expected to have renamed it into place. It has the mode ``mkdir`` would give it
    (``0o777 & ~umask``), not ``mkdtemp``'s 0700: the image cache is shared by every run on the machine.
    """
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        os.chmod(tmp, 0o777 & ~current_umask())
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created when missing) for the block.

    The kernel drops the lock when the process dies, so a crashed holder never blocks the others.
    The lock file itself stays: removing it would race with a process about to lock it.
    """
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def allocate_npy(path: Path, shape: tuple[int, ...]) -> np.memmap:
    """A writable memory map of a new uint8 ``.npy`` file whose blocks are reserved before it is mapped.

    Writing to a mapped page that the filesystem cannot back raises SIGBUS, which kills the process
    without a message; with the blocks reserved up front a full disk is an ``OSError`` (ENOSPC) here.
    """
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False, "shape": shape}
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        size = handle.tell() + math.prod(shape)
        handle.flush()
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(handle.fileno(), 0, size)
        else:  # e.g. macOS: write the zeros, so every block exists before the file is mapped
            block = bytes(1 << 24)
            for _ in range(handle.tell(), size, len(block)):
                handle.write(block)
            handle.truncate(size)
    return np.lib.format.open_memmap(path, mode="r+")


def is_disk_full(error: BaseException) -> bool:
    """True for the errors of a full disk or an exhausted quota."""
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


def format_bytes(count: float) -> str:
    """``1234567`` -> ``'1.2 MB'`` (decimal units, as ``df -H`` prints them)."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(count) < 1000:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"
