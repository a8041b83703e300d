"""Frozen weights kept at the mixed-precision dtype, so autocast has nothing to cast per step.

Under autocast every linear layer and convolution casts its fp32 weight and bias to bf16 (fp16 on
older GPUs) at each call: about one cast kernel per layer and pass (234 per vpt step at ViT-S, a
quarter of the step's kernels) and a transient copy of every weight. A frozen weight never changes,
so casting it once, when training starts, gives the same values autocast would (the same rounding)
and autocast then passes it through. Trained tensors stay fp32, their updates need the precision,
and so does what autocast runs in fp32 (layer norms, positional embedding, class token): a step
computes exactly what it did with the casts.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["LOWERED_MODULES", "lower_frozen_weights"]

#: The modules whose weights autocast casts to the lower precision at every call.
LOWERED_MODULES: tuple[type[nn.Module], ...] = (nn.Linear, nn.modules.conv._ConvNd)


def lower_frozen_weights(model: nn.Module, dtype: torch.dtype) -> int:
    """Cast, in place, the frozen (``requires_grad=False``) floating-point weights and biases of
    ``model``'s :data:`LOWERED_MODULES` to ``dtype``; returns how many tensors were cast.

    Only for a model that then runs under autocast to ``dtype``: outside it, an fp32 input meets a
    ``dtype`` weight and the layer refuses. Its backbone hash must be taken before (it hashes values
    as loaded).
    """
    cast = 0
    for module in model.modules():
        if not isinstance(module, LOWERED_MODULES):
            continue
        for param in module.parameters(recurse=False):
            if not param.requires_grad and param.is_floating_point() and param.dtype != dtype:
                param.data = param.data.to(dtype)
                cast += 1
    return cast
