"""Confidence intervals of a mean over a few repeated runs: Student's t.

``mean ± t(0.975, n-1) · s / √n``, with ``s`` the sample standard deviation (n - 1 in the
denominator). It assumes the runs' values are independent draws of one normal distribution; over
final runs that differ only in their seed it describes the seed's variance, nothing else. One run has
no interval (``half_width`` None, shown as ``n/a``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

__all__ = ["Interval", "t_interval"]


@dataclass(frozen=True)
class Interval:
    """A mean with the half width of its confidence interval (None for a single value)."""

    mean: float
    half_width: Optional[float]
    n: int
    confidence: float = 0.95

    @property
    def low(self) -> Optional[float]:
        return None if self.half_width is None else self.mean - self.half_width

    @property
    def high(self) -> Optional[float]:
        return None if self.half_width is None else self.mean + self.half_width

    def format(self, scale: float = 1.0, digits: int = 2) -> str:
        """``72.31 ± 1.20`` (values times ``scale``), or ``72.31 ± n/a`` for a single value."""
        spread = "n/a" if self.half_width is None else f"{scale * self.half_width:.{digits}f}"
        return f"{scale * self.mean:.{digits}f} ± {spread}"


def t_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """The two-sided Student-t interval of the mean of ``values`` (at least one finite value)."""
    from scipy.stats import t

    data = [float(v) for v in values]
    if not data or not all(math.isfinite(v) for v in data):
        raise ValueError(f"an interval needs finite values, got {data}")
    n = len(data)
    mean = math.fsum(data) / n
    if n == 1:
        return Interval(mean, None, 1, confidence)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in data) / (n - 1))
    return Interval(mean, float(t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n), n, confidence)
