"""Deep visual prompts (VPT-deep) shared by every image, and how several passes' prompts share a batch.

Layer ``i`` owns ``max(N - i * step, 0)`` prompt vectors for ``i < depth``. The prompted forward
appends them to the token sequence before block ``i`` and drops their outputs after it, so every
block sees fresh prompts and the CLS token keeps its place. Passes with other prompts over the same
images (VPTSP's sample and proxy passes) run as one batch: :func:`stack_passes` pads each block's
prompts to the widest pass's count and :func:`padding_mask` hides the padding from attention.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["prompt_counts", "init_prompt_", "DeepPrompts", "stack_passes", "padding_mask"]


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


def stack_passes(prompts: Sequence[Optional[torch.Tensor]], like: torch.Tensor) -> tuple[Optional[torch.Tensor],
                                                                                        tuple[int, ...]]:
    """One block's prompts of P passes, each (B, n_j, D) or None, as one (P * B, max n_j, D) batch.

    Narrower passes are padded with zeros (hidden by :func:`padding_mask`), in ``like``'s dtype.
    Returns the batch (None when no pass has prompts here) and the counts n_j.
    """
    counts = tuple(0 if p is None else p.shape[1] for p in prompts)
    width = max(counts)
    if width == 0:
        return None, counts
    if len(prompts) == 1:
        return prompts[0].to(like.dtype), counts
    batch = like.shape[0] // len(prompts)
    padded = [like.new_zeros(batch, width, like.shape[-1]) if p is None else
              F.pad(p, (0, 0, 0, width - p.shape[1])) if p.shape[1] < width else p for p in prompts]
    return torch.cat(padded).to(like.dtype), counts


def padding_mask(counts: tuple[int, ...], num_tokens: int, like: torch.Tensor) -> Optional[torch.Tensor]:
    """An additive attention mask (P * B, 1, 1, num_tokens + max n_j) hiding pass j's padded prompts.

    Zero where a key is a token or a prompt of the query's own pass, -inf on padding: the padding gets
    exactly zero attention weight, so each pass computes what it would alone. None when no pass is
    padded. In the autocast dtype under autocast, so that attention takes it without a cast per block.
    """
    width = max(counts)
    if min(counts) == width:
        return None
    device = like.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else like.dtype
    mask = like.new_zeros(len(counts), like.shape[0] // len(counts), 1, 1, num_tokens + width, dtype=dtype)
    for j, count in enumerate(counts):
        if count < width:
            mask[j, ..., num_tokens + count:] = float("-inf")
    return mask.flatten(0, 1)
