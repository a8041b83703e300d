"""Backbone creation: any timm VisionTransformer, from the hub or from a local weights file.

Local files are read by our own code (safetensors, ``torch.load(weights_only=True)``, or timm's
``.npz`` reader), passed through timm's own checkpoint filter (which resamples position embeddings
to the requested image size) and then loaded strictly, so a file made for another architecture is a
clear one-line error instead of a half-loaded model.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

import timm
from timm.models import generate_default_cfgs, register_model
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

from ..errors import BackboneError, first_line
from .timm_compat import create_vision_transformer, vit_pretrained_cfg

__all__ = ["BackboneError", "create_backbone", "load_backbone_weights", "WEIGHT_SUFFIXES",
           "MICRO_SYNTHETIC_WEIGHTS"]

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".npz")


# A micro ViT for tests and the CPU demo: ViT-S/16's 12 blocks (so every depth of the paper's search
# spaces fits) at 32 px with 4x4 patches of 8 px and width 64. The
# "synthetic" tag is pretrained on generated shapes and ships with the package (semproxy/tools/pretrain_micro.py).
MICRO_SYNTHETIC_WEIGHTS = Path(__file__).parent / "weights" / "vit_micro_patch8_32.synthetic.safetensors"
default_cfgs = generate_default_cfgs({
    "vit_micro_patch8_32.untrained": vit_pretrained_cfg(
        input_size=(3, 32, 32), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), num_classes=0),
    "vit_micro_patch8_32.synthetic": vit_pretrained_cfg(
        file=str(MICRO_SYNTHETIC_WEIGHTS), input_size=(3, 32, 32), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
        num_classes=0),
})


@register_model
def vit_micro_patch8_32(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """ViT-Micro/8 at 32 px (D=64, 12 blocks, 2 heads): tests and the synthetic CPU demo."""
    args = dict(img_size=32, patch_size=8, embed_dim=64, depth=12, num_heads=2)
    return create_vision_transformer("vit_micro_patch8_32", pretrained=pretrained, **dict(args, **kwargs))


def _npz_depth(path: Path) -> Optional[int]:
    """Blocks in a JAX checkpoint with per-block keys; timm's reader would ignore extra ones."""
    try:
        with np.load(path) as archive:
            names = archive.files
    except Exception:  # noqa: BLE001 - reported by the reader itself
        return None
    found = {int(m.group(1)) for n in names if (m := re.search(r"encoderblock_(\d+)/", n))}
    return max(found) + 1 if found else None


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict", "model_state"):  # common wrappers of training scripts
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise BackboneError(f"weights file {path}: expected a state dict, found {type(state).__name__}")
    return state


def _describe_mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> Optional[str]:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = [
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    parts = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
        if keys:
            more = f", ... ({len(keys)} in all)" if len(keys) > 3 else ""
            parts.append(f"{label}: {', '.join(keys[:3])}{more}")
    return "; ".join(parts) or None


def load_backbone_weights(model: VisionTransformer, path: str | Path, name: str) -> None:
    """Load a local weights file into ``model`` strictly (classifier-head keys are dropped)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise BackboneError(f"weights file {path} not found (expected a {'/'.join(WEIGHT_SUFFIXES)} file for '{name}')")
    if path.suffix not in WEIGHT_SUFFIXES:
        raise BackboneError(f"weights file {path}: unknown format '{path.suffix}' "
                            f"(expected {', '.join(WEIGHT_SUFFIXES)})")
    if path.suffix == ".npz":
        depth = _npz_depth(path)
        if depth is not None and depth != len(model.blocks):
            raise BackboneError(f"weights file {path} does not match '{name}': {depth} blocks in the file, "
                                f"{len(model.blocks)} in the model")
        try:  # timm's reader for the original JAX/big_vision checkpoints
            model.load_pretrained(str(path))
        except Exception as error:  # noqa: BLE001 - any failure means "does not fit"
            raise BackboneError(f"weights file {path} does not match '{name}': {first_line(error)}") from None
        return
    try:
        state = _read_state_dict(path)
    except BackboneError:
        raise
    except Exception as error:  # noqa: BLE001 - unreadable or corrupt file
        raise BackboneError(f"weights file {path} cannot be read: {first_line(error)}") from None
    try:
        state = checkpoint_filter_fn(state, model)
    except Exception as error:  # noqa: BLE001 - the filter fails on foreign layouts
        raise BackboneError(f"weights file {path} does not match '{name}': {first_line(error)}") from None
    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    problem = _describe_mismatch(model, state)
    if problem:
        raise BackboneError(f"weights file {path} does not match '{name}': {problem}")
    model.load_state_dict(state, strict=True)


def create_backbone(
        name: str,
        *,
        weights: Optional[str | Path] = None,
        pretrained: bool = False,
        img_size: Optional[int] = None,
) -> VisionTransformer:
    """Build a timm ViT without classifier (``num_classes=0``).

    Args:
        name: timm model name, optionally with a pretrained tag (``vit_small_patch16_224.augreg_in21k``).
        weights: a local weights file; takes precedence over ``pretrained``.
        pretrained: download the tagged weights through timm (needs network or a hub cache).
        img_size: input resolution; position embeddings of loaded weights are resampled to it.
    """
    kwargs = {"num_classes": 0}
    if img_size is not None:
        kwargs["img_size"] = img_size
    if not timm.is_model(name.split(".")[0]):
        close = timm.list_models(f"*{name.split('.')[0].split('_')[0]}*")[:3]
        raise BackboneError(f"unknown timm model '{name}'" + (f" (e.g. {', '.join(close)})" if close else ""))
    try:
        model = timm.create_model(name, pretrained=pretrained and weights is None, **kwargs)
    except Exception as error:  # noqa: BLE001 - hub errors are long and many-lined
        hint = (" (offline? give a local weights file: --weights FILE, or weights: in the config)"
                if pretrained and weights is None else "")
        raise BackboneError(f"cannot build '{name}': {first_line(error)}{hint}") from None
    if not isinstance(model, VisionTransformer):
        raise BackboneError(f"'{name}' is a {type(model).__name__}; semproxy needs a timm VisionTransformer")
    if weights is not None:
        load_backbone_weights(model, weights, name)
    return model
