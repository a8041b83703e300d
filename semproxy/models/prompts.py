"""Deep visual prompts (VPT-deep) shared by every image.

Layer ``i`` owns ``max(N - i * step, 0)`` prompt vectors for ``i < depth``. The prompted forward
appends them to the token sequence before block ``i`` and drops their outputs after it, so every
block sees fresh prompts and the CLS token keeps its place.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

__all__ = ["prompt_counts", "init_prompt_", "DeepPrompts"]


def prompt_counts(num: int, depth: int, step: int, num_layers: int) -> list[int]:
    """Prompts per layer: ``max(num - i * step, 0)`` for ``i < depth``, zero below that depth."""
    return [max(num - i * step, 0) if i < depth else 0 for i in range(num_layers)]


def init_prompt_(tensor: torch.Tensor, patch_size: int, dim: int) -> torch.Tensor:
    """Original VPT init: uniform with the xavier bound of a patch-embedding-sized fan-in.

    (The paper code used xavier-normal; the uniform variant of VPT is kept here for its bound
    does not depend on the tensor's own shape, so class and sample prompts start alike.)
    """
    bound = math.sqrt(6.0 / float(3 * patch_size * patch_size + dim))
    with torch.no_grad():
        return tensor.uniform_(-bound, bound)


class DeepPrompts(nn.Module):
    """One learnable (N_i, D) prompt matrix per layer with N_i > 0."""

    def __init__(self, counts: list[int], dim: int, patch_size: int) -> None:
        super().__init__()
        self.counts = list(counts)
        self.prompts = nn.ParameterDict({
            str(i): nn.Parameter(init_prompt_(torch.empty(n, dim), patch_size, dim))
            for i, n in enumerate(counts) if n > 0
        })

    def layer(self, index: int, batch_size: int) -> Optional[torch.Tensor]:
        """Prompts of layer ``index`` expanded to the batch, or None for a layer without prompts."""
        prompt = self.prompts[str(index)] if self.counts[index] > 0 else None
        return None if prompt is None else prompt.unsqueeze(0).expand(batch_size, -1, -1)
