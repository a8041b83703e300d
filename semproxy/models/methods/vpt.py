"""VPT-deep (Jia et al. 2022): learnable prompts join the tokens of the first ``prompt_depth`` blocks."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from timm.models.vision_transformer import VisionTransformer

from ..prompts import DeepPrompts, prompt_counts
from .base import PEFTMethod, register_method

__all__ = ["VPT"]


@register_method("vpt")
class VPT(PEFTMethod):
    """Deep visual prompts on the sample branch (+ the backbone's biases with ``bitfit: true``: the paper's "(B)")."""

    part_knobs = {"prompts": "num_prompts, prompt_depth"}

    def build(self, backbone: VisionTransformer) -> dict[str, nn.Module]:
        cfg = self.cfg
        self.check_depth("prompt_depth")
        counts = prompt_counts(cfg.num_prompts, cfg.prompt_depth, cfg.prompt_step, self.num_layers)
        self.prompts = DeepPrompts(counts, self.dim, self.patch_size)
        return {"prompts": self.prompts}

    def sample_prompts(self, batch_size: int) -> list[Optional[torch.Tensor]]:
        return [self.prompts.layer(i, batch_size) for i in range(self.num_layers)]
