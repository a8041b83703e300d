"""AdaptFormer adapters (Chen et al. 2022) in the last ``adapter_layers`` blocks of a timm ViT.

The adapter runs beside the block's own submodules (``norm1``, ``attn``, ``mlp`` ...), so the number
of heads, the qkv bias and any layer scale are those of the backbone itself; the paper code rebuilt
the blocks with 12 heads and no qkv bias, which corrupts ViT-S attention. It joins through forward
hooks on timm's ``Block``: timm's own forward runs unchanged (attention masks included).
"""
from __future__ import annotations

import math
from typing import Literal, Optional

import torch
from torch import nn
from timm.models.vision_transformer import VisionTransformer

from ..timm_compat import submodule
from .base import BlockAddition, PEFTMethod, register_method

__all__ = ["Adapter", "ADAPTER_INITS", "AdaptFormer"]


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


class Adapter(BlockAddition):
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
        self._input: Optional[torch.Tensor] = None  # the adapter's input in the block running now

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm_position == "pre":
            x = self.norm(x)
        x = self.up(self.dropout(self.act(self.down(x)))) * self.scale
        if self.norm_position == "post":
            x = self.norm(x)
        return x

    def attach(self, block: nn.Module) -> None:
        """Make ``block`` compute x + mlp_branch(x) + adapter(u), u = x (parallel) or mlp_branch(x) (sequential).

        x is the residual stream after attention, which enters ``norm2``; the MLP branch ends in
        ``drop_path2``. A hook there keeps u; a hook on the block adds the adapter's output to timm's.
        """
        if self.position == "parallel":
            submodule(block, "norm2", "adapter").register_forward_hook(self._keep_input)
        else:
            submodule(block, "drop_path2", "adapter").register_forward_hook(self._keep_output)
        block.register_forward_hook(self._add)

    def _keep_input(self, module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        self._input = args[0]

    def _keep_output(self, module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        self._input = output

    def _add(self, block: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
        kept, self._input = self._input, None
        return output + self(kept)


@register_method("adapter")
class AdaptFormer(PEFTMethod):
    """Adapters in the last ``adapter_layers`` blocks (+ the backbone's biases with ``bitfit: true``)."""

    part_knobs = {"adapters": "adapter_layers, adapter_dim"}

    def build(self, backbone: VisionTransformer) -> dict[str, nn.Module]:
        cfg = self.cfg
        return {"adapters": self.last_blocks(backbone, "adapter_layers", lambda: Adapter(
            self.dim, cfg.adapter_dim, position=cfg.adapter_position, norm=cfg.adapter_norm,
            init=cfg.adapter_init, scale=cfg.adapter_scale, dropout=cfg.adapter_dropout))}
