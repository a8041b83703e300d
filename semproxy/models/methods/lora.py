"""LoRA (Hu et al. 2021) on the query and value projections of the last ``lora_layers`` attention blocks.

timm's ``Attention`` computes q, k and v with one fused ``qkv`` Linear (D -> 3D, in that order). A
forward hook on it adds low-rank updates to the q and v thirds: qkv(x) + [B_q A_q x, 0, B_v A_v x] *
alpha / rank, with A kaiming-uniform and B zero, so every block starts exactly as it was. The frozen
weights are untouched (no merge), so the backbone's checkpoint hash does not change.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from timm.models.vision_transformer import VisionTransformer

from ...errors import BackboneError
from ..timm_compat import submodule
from .base import BlockAddition, PEFTMethod, register_method

__all__ = ["LowRankUpdate", "QVLoRA", "LoRA"]


class LowRankUpdate(nn.Module):
    """x -> B A x * scale with A (rank, D) kaiming-uniform (as nn.Linear's weight) and B (D, rank) zero."""

    def __init__(self, dim: int, rank: int, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.a = nn.Parameter(nn.init.kaiming_uniform_(torch.empty(rank, dim), a=math.sqrt(5)))
        self.b = nn.Parameter(torch.zeros(dim, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(x, self.a), self.b) * self.scale


class QVLoRA(BlockAddition):
    """The q and v updates of one block's fused ``attn.qkv`` projection."""

    def __init__(self, dim: int, rank: int, alpha: float) -> None:
        super().__init__()
        self.q = LowRankUpdate(dim, rank, alpha / rank)
        self.v = LowRankUpdate(dim, rank, alpha / rank)

    def attach(self, block: nn.Module) -> None:
        """Add the updates to the output of ``block.attn.qkv`` (a forward hook: timm's Attention runs as it is)."""
        qkv = submodule(block, "attn.qkv", "lora")
        if not isinstance(qkv, nn.Linear) or qkv.out_features != 3 * self.q.b.shape[0]:
            raise BackboneError(f"lora needs attn.qkv to be a fused Linear(D, 3D), got {qkv}")
        qkv.register_forward_hook(self._add)

    def _add(self, qkv: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
        q = self.q(args[0])
        return output + torch.cat([q, torch.zeros_like(q), self.v(args[0])], dim=-1)


@register_method("lora")
class LoRA(PEFTMethod):
    """LoRA on q and v of the last ``lora_layers`` blocks (+ the backbone's biases with ``bitfit: true``)."""

    part_knobs = {"lora": "lora_layers, lora_rank"}

    def build(self, backbone: VisionTransformer) -> dict[str, nn.Module]:
        cfg = self.cfg
        return {"lora": self.last_blocks(backbone, "lora_layers",
                                         lambda: QVLoRA(self.dim, cfg.lora_rank, cfg.lora_alpha))}
