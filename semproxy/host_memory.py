"""Keep freed host memory in the process, so a CPU training step does not page-fault its activations.

glibc's malloc serves large blocks (a ViT-S activation at batch 32 is ~40 MB) with ``mmap`` and
gives them back with ``munmap`` on free. Every CPU training step then maps its activations afresh,
and the kernel zeroes each 4 KiB page on first touch: ~0.6-0.9 million page faults and ~20% of a
ViT-S prompt-tuning step on the 2-core machine of ``bench/RESULTS.md``. Raising the mmap and trim
thresholds keeps freed blocks on malloc's heap for the next step to reuse (the effect of the
jemalloc/tcmalloc preload that PyTorch's CPU tuning guide recommends, without a preload). The cost
is that the process holds on to its peak working set, which a training process reuses anyway.

Process-wide, so only the entry point of a run sets it: ``semproxy.train.begin_run`` (called by
``fit``) for training and ``semproxy.evaluation.evaluate_checkpoint`` for evaluation, on a CPU.
Library objects such as a ``Trainer`` leave it alone; a bench chooses for itself.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import platform

__all__ = ["keep_freed_host_memory", "KEEP_BELOW_BYTES"]

# mallopt(3) parameter numbers (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# The largest value mallopt takes (an int): blocks up to 2 GiB are reused, a heap top above it is trimmed.
KEEP_BELOW_BYTES = 2**31 - 1

_applied: bool | None = None


def keep_freed_host_memory() -> bool:
    """Tell glibc malloc to reuse freed large blocks instead of unmapping them; once per process.

    Returns whether the setting is in effect (False off Linux/glibc, e.g. macOS or musl, where
    nothing is changed). Affects blocks allocated after the call.
    """
    global _applied
    if _applied is None:
        _applied = _set_thresholds()
    return _applied


def _set_thresholds() -> bool:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, KEEP_BELOW_BYTES)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, KEEP_BELOW_BYTES))
