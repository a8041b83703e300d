"""The fine-tuning method interface and its registry (method.md section 1).

A method says what it adds to a frozen timm ViT and what it trains; :class:`~semproxy.models.PromptedViT`
assembles any of them the same way, through this interface alone:

1. ``method = METHODS[cfg.method](cfg, backbone, where)``;
2. ``method.build(backbone)``: the modules it adds, registered on the model under the names it gives
   (the prefix of their trained tensors in checkpoints); modules that change the backbone's computation
   attach themselves through PyTorch forward hooks on timm's own submodules, never a copy of timm code;
3. ``method.semantic_proxies(num_classes)``: the semantic-proxy module (class prompts, proxy head,
   accumulator) or None;
4. ``method.trains_parameter(name)`` for every backbone parameter; the method's own modules and the
   heads always train;
5. ``method.proxy_parameters()``: its parameters optimised with the proxies at ``lr_proxy`` (the
   rest of what trains is optimised at ``lr``);
6. per forward, ``method.sample_prompts(batch_size)``: the prompts each block sees, if any.

A method registers itself with ``@register_method("name")``; the name is the config's ``method`` value.
"""
from __future__ import annotations

from typing import Callable, ClassVar, Optional, TypeVar

import torch
from torch import nn
from timm.models.vision_transformer import VisionTransformer

from ...config import ConfigError, ModelConfig
from ..semantic import SemanticProxies

__all__ = ["FineTuningMethod", "PEFTMethod", "BlockAddition", "METHODS", "register_method", "get_method", "is_bias"]


def is_bias(name: str) -> bool:
    """Whether a parameter name is a bias (what BitFit trains)."""
    return name.endswith("bias")


class BlockAddition(nn.Module):
    """A module that joins one transformer block's computation (adapters, LoRA)."""

    def attach(self, block: nn.Module) -> None:
        """Register forward hooks on ``block`` or its submodules (timm's forward runs unchanged)."""
        raise NotImplementedError


class FineTuningMethod:
    """A frozen backbone with nothing added: the base every method overrides where it differs.

    Class attributes:
        name: the config's ``method`` value (set by :func:`register_method`).
        trains_backbone: the backbone is fine-tuned as a whole, so it follows the model's train mode
            (dropout, drop-path); otherwise it stays in eval mode.
        accumulator: the semantic proxies' accumulator (a key of ``ACCUMULATORS``), or None.
        part_knobs: part name (as ``count_parameters`` names it) -> the config keys that size it, named
            when that part does not fit in memory.
    """

    name: ClassVar[str] = ""
    trains_backbone: ClassVar[bool] = False
    accumulator: ClassVar[Optional[str]] = None
    part_knobs: ClassVar[dict[str, str]] = {}

    def __init__(self, cfg: ModelConfig, backbone: VisionTransformer, where: str = "model") -> None:
        self.cfg, self.where = cfg, where
        self.num_layers, self.dim = len(backbone.blocks), backbone.embed_dim
        self.patch_size = backbone.patch_embed.patch_size[0]

    def build(self, backbone: VisionTransformer) -> dict[str, nn.Module]:
        """Create (and attach) the modules the method adds, by the attribute name they get on the model."""
        return {}

    def semantic_proxies(self, num_classes: int) -> Optional[SemanticProxies]:
        """The per-class semantic proxies fused with the ordinary proxies, or None for ordinary proxies only."""
        return None

    def trains_parameter(self, name: str) -> bool:
        """Whether the backbone parameter ``name`` (as ``backbone.named_parameters`` gives it) is trained."""
        return self.trains_backbone

    def proxy_parameters(self) -> list[nn.Parameter]:
        """Parameters of the added modules optimised at ``lr_proxy`` with the proxies (the rest at ``lr``)."""
        return []

    def sample_prompts(self, batch_size: int) -> list[Optional[torch.Tensor]]:
        """Per block, the prompts (B, n_i, D) that join its tokens on the sample branch, or None."""
        return [None] * self.num_layers

    # -- helpers for subclasses -----------------------------------------------------------------
    def check_depth(self, key: str) -> int:
        """The config's ``key`` (a number of blocks), or a ConfigError when the backbone has fewer blocks."""
        value = getattr(self.cfg, key)
        if value > self.num_layers:
            raise ConfigError(f"{self.where}: key '{key}' is {value} but backbone '{self.cfg.backbone}' has "
                              f"{self.num_layers} blocks")
        return value

    def last_blocks(self, backbone: VisionTransformer, key: str,
                    make: Callable[[], BlockAddition]) -> nn.ModuleDict:
        """One ``make()`` for each of the last ``cfg.<key>`` blocks, attached to it, keyed by block index."""
        first = self.num_layers - self.check_depth(key)
        added = nn.ModuleDict({str(i): make() for i in range(first, self.num_layers)})
        for index, module in added.items():
            module.attach(backbone.blocks[int(index)])
        return added


class PEFTMethod(FineTuningMethod):
    """A method that adds modules to the frozen backbone and, with ``bitfit: true``, trains its biases too."""

    def trains_parameter(self, name: str) -> bool:
        return self.cfg.bitfit and is_bias(name)


METHODS: dict[str, type[FineTuningMethod]] = {}
M = TypeVar("M", bound=type[FineTuningMethod])


def register_method(name: str) -> Callable[[M], M]:
    """Class decorator: register a :class:`FineTuningMethod` under the config's ``method`` value ``name``."""
    def register(cls: M) -> M:
        if name in METHODS:
            raise ValueError(f"method '{name}' is registered twice ({METHODS[name].__qualname__}, {cls.__qualname__})")
        cls.name = name
        METHODS[name] = cls
        return cls
    return register


def get_method(name: str) -> type[FineTuningMethod]:
    """The method registered under ``name``, or a ConfigError naming the registered ones."""
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown method '{name}' (expected one of {', '.join(METHODS)})") from None
