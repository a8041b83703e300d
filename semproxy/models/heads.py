"""Embedding heads: LayerNorm -> Linear -> L2 normalise (sample branch and proxy branch alike)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["EmbeddingHead"]


class EmbeddingHead(nn.Module):
    """Project a D-wide backbone feature to a unit-norm E-wide embedding (xavier weight, zero bias)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_dim)
        self.proj = nn.Linear(in_dim, out_dim)
        nn.init.xavier_uniform_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(self.norm(x)), dim=-1)
