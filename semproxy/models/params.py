"""Parameter accounting: what a method trains per step, what it learns in all, and the ratio to the backbone.

The class-prompt bank is the one part where the two differ: all C classes' prompts are learned, but
a step touches only the batch's classes. The proxies count as learned (C x E), as in the paper's
Table 1 (e.g. linear probing on CUB: 0.19M = head + 100 proxies of width 384).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .methods import is_bias
from .prompted_vit import PromptedViT

__all__ = ["ParameterCount", "count_parameters"]


@dataclass
class ParameterCount:
    backbone: int                      # every backbone parameter, trained or not
    learned: int                       # every parameter the method trains, all classes
    per_step: int                      # parameters one optimiser step can change
    parts: dict[str, int] = field(default_factory=dict)

    @property
    def learned_percent(self) -> float:
        return 100.0 * self.learned / self.backbone

    @property
    def per_step_percent(self) -> float:
        return 100.0 * self.per_step / self.backbone


def _part_of(name: str) -> str:
    if name.startswith("backbone."):
        return "backbone biases" if is_bias(name) else "backbone weights"
    return name.split(".")[0] if not name.startswith("semantic.") else "semantic " + name.split(".")[1]


def count_parameters(model: PromptedViT, classes_per_batch: int) -> ParameterCount:
    """Count the model's trainable parameters; ``classes_per_batch`` = batch size / samples per class."""
    backbone = sum(p.numel() for p in model.backbone.parameters())
    parts: dict[str, int] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            parts[_part_of(name)] = parts.get(_part_of(name), 0) + param.numel()
    dense = sum(parts.values())
    learned, per_step = dense, dense
    if model.semantic is not None:
        per_class = model.semantic.bank.numel_per_class()
        parts["semantic class prompts"] = per_class * model.num_classes
        learned += per_class * model.num_classes
        per_step += per_class * min(classes_per_batch, model.num_classes)
    return ParameterCount(backbone=backbone, learned=learned, per_step=per_step, parts=parts)
