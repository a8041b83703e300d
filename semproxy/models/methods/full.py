"""Full fine-tuning: every backbone weight is trained (the backbone follows the model's train mode)."""
from __future__ import annotations

from .base import FineTuningMethod, register_method

__all__ = ["FullFineTuning"]


@register_method("full")
class FullFineTuning(FineTuningMethod):
    """Trains the whole backbone, the embedding head and the proxies."""

    trains_backbone = True
