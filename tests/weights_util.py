"""Write a timm ViT's weights in the original JAX (.npz) layout, to test timm's npz reader through ours."""
from __future__ import annotations

import numpy as np
from timm.models.vision_transformer import VisionTransformer


def save_jax_npz(model: VisionTransformer, path) -> None:
    """Inverse of timm's ``_load_weights`` for the original (non-big_vision) ViT layout."""
    def arr(t):
        return t.detach().cpu().numpy()

    dim = model.embed_dim
    out = {
        "embedding/kernel": arr(model.patch_embed.proj.weight).transpose(2, 3, 1, 0),
        "embedding/bias": arr(model.patch_embed.proj.bias),
        "cls": arr(model.cls_token),
        "Transformer/posembed_input/pos_embedding": arr(model.pos_embed),
        "Transformer/encoder_norm/scale": arr(model.norm.weight),
        "Transformer/encoder_norm/bias": arr(model.norm.bias),
    }
    for i, block in enumerate(model.blocks):
        p = f"Transformer/encoderblock_{i}/"
        heads = block.attn.num_heads
        out[p + "LayerNorm_0/scale"], out[p + "LayerNorm_0/bias"] = arr(block.norm1.weight), arr(block.norm1.bias)
        out[p + "LayerNorm_2/scale"], out[p + "LayerNorm_2/bias"] = arr(block.norm2.weight), arr(block.norm2.bias)
        qkv_w, qkv_b = arr(block.attn.qkv.weight), arr(block.attn.qkv.bias)
        for j, name in enumerate(("query", "key", "value")):
            out[p + f"MultiHeadDotProductAttention_1/{name}/kernel"] = (
                qkv_w[j * dim:(j + 1) * dim].T.reshape(dim, heads, dim // heads))
            out[p + f"MultiHeadDotProductAttention_1/{name}/bias"] = qkv_b[j * dim:(j + 1) * dim].reshape(heads, -1)
        out[p + "MultiHeadDotProductAttention_1/out/kernel"] = (
            arr(block.attn.proj.weight).reshape(dim, heads, dim // heads).transpose(1, 2, 0))
        out[p + "MultiHeadDotProductAttention_1/out/bias"] = arr(block.attn.proj.bias)
        for r, fc in enumerate((block.mlp.fc1, block.mlp.fc2)):
            out[p + f"MlpBlock_3/Dense_{r}/kernel"] = arr(fc.weight).T
            out[p + f"MlpBlock_3/Dense_{r}/bias"] = arr(fc.bias)
    np.savez(path, **out)
