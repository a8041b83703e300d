"""AdaptFormer adapters (Chen et al. 2022) attached to the blocks of a timm ViT.

The adapter runs beside the block's own submodules (``norm1``, ``attn``, ``mlp`` ...), so the number
of heads, the qkv bias and any layer scale are those of the backbone itself; the paper code rebuilt
the blocks with 12 heads and no qkv bias, which corrupts ViT-S attention.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

__all__ = ["Adapter", "adapted_block_forward", "ADAPTER_INITS"]


def _init_lora(adapter: "Adapter") -> None:
    # Kaiming-uniform down, zero up: the adapter starts as the identity of the block.
    nn.init.kaiming_uniform_(adapter.down.weight, a=math.sqrt(5))
    nn.init.zeros_(adapter.up.weight)


def _init_bert(adapter: "Adapter") -> None:
    nn.init.normal_(adapter.down.weight, std=0.02)
    nn.init.normal_(adapter.up.weight, std=0.02)


def _init_uniform(adapter: "Adapter") -> None:
    nn.init.xavier_uniform_(adapter.down.weight)
    nn.init.xavier_uniform_(adapter.up.weight)


ADAPTER_INITS = {"lora": _init_lora, "bert": _init_bert, "uniform": _init_uniform}


class Adapter(nn.Module):
    """down (D -> d) -> ReLU -> dropout -> up (d -> D) -> * scale, with an optional LayerNorm."""

    def __init__(
            self,
            dim: int,
            mid_dim: int,
            *,
            position: Literal["parallel", "sequential"] = "parallel",
            norm: Literal["pre", "post", "none"] = "pre",
            init: Literal["lora", "bert", "uniform"] = "lora",
            scale: float = 0.1,
            dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.position, self.norm_position, self.scale = position, norm, scale
        self.norm = nn.LayerNorm(dim) if norm != "none" else nn.Identity()
        self.down = nn.Linear(dim, mid_dim)
        self.up = nn.Linear(mid_dim, dim)
        self.act = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        ADAPTER_INITS[init](self)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm_position == "pre":
            x = self.norm(x)
        x = self.up(self.dropout(self.act(self.down(x)))) * self.scale
        if self.norm_position == "post":
            x = self.norm(x)
        return x


def adapted_block_forward(block: nn.Module, adapter: Adapter, x: torch.Tensor) -> torch.Tensor:
    """A timm ``Block`` forward with the adapter beside (parallel) or after (sequential) its MLP."""
    x = x + block.drop_path1(block.ls1(block.attn(block.norm1(x))))
    h = block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
    if adapter.position == "parallel":
        return x + h + adapter(x)
    return x + h + adapter(h)
