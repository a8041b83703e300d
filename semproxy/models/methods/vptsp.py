"""VPTSP (Ren et al. 2024): VPT plus semantic proxies from per-class prompts, accumulated by EMA or a GRU.

The class prompts, the proxy head and the accumulator live in
:class:`~semproxy.models.semantic.SemanticProxies`; the prompted ViT runs the proxy pass with them.
"""
from __future__ import annotations

from typing import Optional

from ..prompts import prompt_counts
from ..semantic import SemanticProxies
from .base import register_method
from .vpt import VPT

__all__ = ["VPTSP", "VPTSPEMA", "VPTSPGRU"]


class VPTSP(VPT):
    """VPT's sample prompts plus semantic proxies accumulated by :attr:`accumulator` (set by subclasses)."""

    part_knobs = {**VPT.part_knobs, "semantic bank": "class_prompts, class_prompt_depth"}

    def semantic_proxies(self, num_classes: int) -> Optional[SemanticProxies]:
        cfg = self.cfg
        self.check_depth("class_prompt_depth")
        counts = prompt_counts(cfg.class_prompts, cfg.class_prompt_depth, cfg.class_prompt_step, self.num_layers)
        return SemanticProxies(num_classes, self.dim, cfg.embedding_dim, counts, self.patch_size,
                               self.accumulator, cfg)


@register_method("vptsp_ema")
class VPTSPEMA(VPTSP):
    """Semantic proxies accumulated by an exponential moving average (``ema_keep``)."""

    accumulator = "ema"


@register_method("vptsp_gru")
class VPTSPGRU(VPTSP):
    """Semantic proxies accumulated by a GRU stepped over each class's in-batch proxies."""

    accumulator = "gru"
