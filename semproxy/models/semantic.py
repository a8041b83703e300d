"""Semantic proxies: class prompts -> second ViT pass -> proxy head -> accumulator -> fusion.

This module owns the per-class parts (the class-prompt bank, the accumulated states P_c), the proxy
head and the accumulator; the prompted ViT runs the second pass with the prompts it hands out.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .accumulators import create_accumulator
from ..data.batch_classes import BatchClasses
from .class_bank import ClassPromptBank
from .heads import EmbeddingHead

__all__ = ["SemanticProxies"]


class SemanticProxies(nn.Module):
    """Per-class semantic proxies fused with the ordinary proxies (the "proxy bias")."""

    def __init__(
            self,
            num_classes: int,
            feature_dim: int,
            embedding_dim: int,
            class_prompt_counts: list[int],
            patch_size: int,
            accumulator: str,
            cfg,
    ) -> None:
        super().__init__()
        self.bias_ratio = cfg.proxy_bias_ratio
        self.normalise_bias = cfg.normalise_bias
        self.bank = ClassPromptBank(num_classes, class_prompt_counts, feature_dim, patch_size,
                                    offload=cfg.offload_class_prompts)
        self.head = EmbeddingHead(feature_dim, embedding_dim)
        self.accumulator = create_accumulator(accumulator, embedding_dim, cfg)
        # States start as random unit vectors and are never reset between epochs.
        self.register_buffer("state", F.normalize(torch.randn(num_classes, embedding_dim), dim=-1))

    def accumulate(self, proxies: torch.Tensor, groups: BatchClasses) -> torch.Tensor:
        """Fold the batch's semantic proxies (B, E) into the states of the batch's classes.

        Returns the fresh, differentiable states (G, E); when training, stores them detached (no
        gradient ever crosses iterations).
        """
        classes = groups.classes
        fresh = self.accumulator(self.state.index_select(0, classes), groups.arrange(proxies), groups.mask)
        if self.training:
            with torch.no_grad():
                self.state.index_copy_(0, classes, fresh.detach().to(self.state.dtype))
        return fresh

    def fuse(self, bias: torch.Tensor, fresh: Optional[torch.Tensor] = None,
             classes: Optional[torch.Tensor] = None) -> torch.Tensor:
        """normalise(lambda * b_c + (1 - lambda) * P_c) for all classes (eq. 8).

        Batch classes use their fresh state, the others the stored (detached) one, so absent
        classes move only through their bias.
        """
        states = self.state
        if fresh is not None:
            states = states.index_copy(0, classes, fresh.to(states.dtype))
        if self.normalise_bias:
            bias = F.normalize(bias, dim=-1)
        return F.normalize(self.bias_ratio * bias + (1.0 - self.bias_ratio) * states, dim=-1)
