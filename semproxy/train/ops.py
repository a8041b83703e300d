"""Counting the aten operations a training step dispatches: the measure of its launch overhead.

On a GPU an eager step is bound by launching kernels from Python when there are many small ones; the
operations that reach aten's dispatcher are those launches (views excepted: they change metadata
and launch nothing), counted the same on the CPU, where this runs. ``tests/test_step_ops.py`` keeps
each method's count under a recorded budget; ``bench/bench_step.py --ops`` tabulates them.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["OpCount", "count_ops"]


@dataclass
class OpCount:
    """Operations dispatched, by aten name: those that compute (a kernel each on a GPU) and the views."""

    kernels_by_name: Counter = field(default_factory=Counter)
    views_by_name: Counter = field(default_factory=Counter)

    @property
    def kernels(self) -> int:
        return sum(self.kernels_by_name.values())

    @property
    def views(self) -> int:
        return sum(self.views_by_name.values())

    @property
    def total(self) -> int:
        return self.kernels + self.views


class _Counter(TorchDispatchMode):
    def __init__(self, count: OpCount) -> None:
        super().__init__()
        self.count = count

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        names = self.count.views_by_name if func.is_view else self.count.kernels_by_name
        names[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def count_ops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, OpCount]:
    """Run ``fn(*args, **kwargs)`` and count the aten operations it dispatches; returns (its result, the count)."""
    count = OpCount()
    with _Counter(count):
        result = fn(*args, **kwargs)
    return result, count
