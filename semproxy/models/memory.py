"""The host memory a model needs, estimated before it is built, so one that cannot fit is refused at once.

The model is built on PyTorch's meta device first (shapes without storage: ~60 ms for a ViT-S), so
the estimate counts exactly the tensors ``build_model`` would allocate (the backbone at its image
size, prompts, adapters, heads, proxies, the class-prompt bank of ``num_classes`` x the per-layer
class-prompt counts x the width) and adds what training keeps beside each trained tensor. Activations
depend on the batch and are not counted: a config refused here could never have run; one accepted
may still need a smaller batch.
"""
from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Optional

import torch

from ..config import ConfigError, ModelConfig
from .backbone import create_backbone
from .methods import get_method
from .params import _part_of
from .prompted_vit import PromptedViT

__all__ = ["model_memory", "available_memory", "check_model_memory", "TRAINED_COPIES", "BANK_COPIES"]

# Copies of a trained tensor while training: the value, its gradient and the optimiser's state (Adam's
# two moments, the most any optimiser here keeps). The class-prompt bank gets gradients only for the
# batch's rows, so it has no full-size gradient.
TRAINED_COPIES = 4
BANK_COPIES = 3
# The knobs that size the backbone's parts of :func:`model_memory`; each method declares its own parts'.
BACKBONE_KNOBS = {"backbone weights": "backbone, img_size", "backbone biases": "backbone"}
MEMINFO = Path("/proc/meminfo")


def model_memory(cfg: ModelConfig, num_classes: int, where: str = "model") -> dict[str, int]:
    """Bytes per part of the model (as :func:`semproxy.models.params.count_parameters` names them) that
    training holds, with gradients and optimiser state; raises what ``build_model`` would raise."""
    with torch.device("meta"):  # placement does not change sizes: no pinned host copy here
        model = PromptedViT(create_backbone(cfg.backbone, img_size=cfg.img_size),
                            dataclasses.replace(cfg, offload_class_prompts=False), num_classes, where=where)
    bank = {id(t) for t in model.semantic.bank.tables()} if model.semantic is not None else set()
    parts: dict[str, int] = {}
    for name, tensor in itertools.chain(model.named_parameters(), model.named_buffers()):
        copies = TRAINED_COPIES if tensor.requires_grad else BANK_COPIES if id(tensor) in bank else 1
        parts[_part_of(name)] = parts.get(_part_of(name), 0) + tensor.numel() * tensor.element_size() * copies
    return parts


def available_memory() -> Optional[int]:
    """Bytes the kernel can give a process without swapping (MemAvailable), or None where unknown."""
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _gib(size: int) -> str:
    return f"{size / 2**30:.1f} GiB"


def check_model_memory(cfg: ModelConfig, num_classes: int, where: str = "model") -> None:
    """Raise a one-line ConfigError when the model of ``cfg`` cannot fit the machine's available memory.

    Called by ``build_model`` before it allocates anything: a class-prompt bank of many classes, or
    many prompts on a wide backbone, would otherwise end in the kernel's OOM killer.
    """
    available = available_memory()
    if available is None:
        return
    parts = model_memory(cfg, num_classes, where)
    total = sum(parts.values())
    if total > available:
        largest = max(parts, key=parts.get)
        knobs = {**BACKBONE_KNOBS, **get_method(cfg.method).part_knobs}.get(largest, "embedding_dim")
        raise ConfigError(f"{where}: the model needs ~{_gib(total)} for {num_classes} classes "
                          "with gradients and optimiser state "
                          f"({largest} {_gib(parts[largest])}: lower {knobs}) but "
                          f"{_gib(available)} of memory is available")
