"""Every use of timm's private API, and of the structure of its ViT blocks, in one place.

semproxy needs timm >= 1.0.20 (pyproject); ``tests/test_prompted_vit.py`` checks each accessor here
against the installed timm (the token embedding against ``forward_features``, the micro ViT's
construction, the submodules that the methods hook), so an upgrade that moves one fails there, by
name, rather than deep inside a training run. Nothing outside this module touches a private timm
attribute.
"""
from __future__ import annotations

import torch
from torch import nn
from timm.models.vision_transformer import VisionTransformer, _cfg, _create_vision_transformer

from ..errors import BackboneError

__all__ = ["SUPPORTED_TIMM", "embed_tokens", "vit_pretrained_cfg", "create_vision_transformer", "submodule"]

#: The timm release series these accessors were written against.
SUPPORTED_TIMM = "1.0."

#: timm's default pretrained-config builder for ViTs (``timm.models.vision_transformer._cfg``).
vit_pretrained_cfg = _cfg
#: timm's ViT factory (``_create_vision_transformer``): builds a registered ViT, loading its weights.
create_vision_transformer = _create_vision_transformer


def embed_tokens(backbone: VisionTransformer, images: torch.Tensor) -> torch.Tensor:
    """The tokens (B, N, D) entering the first block, as ``forward_features`` computes them.

    Patch embedding, then position embedding with the prefix (CLS, register) tokens (timm's private
    ``_pos_embed``), patch dropout and the pre-norm.
    """
    return backbone.norm_pre(backbone.patch_drop(backbone._pos_embed(backbone.patch_embed(images))))


def submodule(module: nn.Module, path: str, needed_by: str) -> nn.Module:
    """``module``'s submodule at dotted ``path`` (e.g. a block's ``attn.qkv``), or a BackboneError.

    The fine-tuning methods hook these submodules of timm's ``Block``; a backbone built with another
    block type is refused naming what is missing and who needs it.
    """
    try:
        return module.get_submodule(path)
    except AttributeError:
        raise BackboneError(f"{needed_by} needs '{path}' in every block, which the backbone's "
                            f"{type(module).__name__} blocks lack (timm's Block has it)") from None
