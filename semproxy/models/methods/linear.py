"""Linear probing: the backbone is frozen and nothing is added; only the embedding head and the proxies train."""
from __future__ import annotations

from .base import FineTuningMethod, register_method

__all__ = ["LinearProbe"]


@register_method("linear")
class LinearProbe(FineTuningMethod):
    """The base method as it is: a frozen backbone under a trained head."""
