"""The prompted ViT: a timm VisionTransformer plus whatever the method trains.

The backbone's own modules run the forward (patch embedding, position embedding, blocks, final
norm, pooling); this class only appends prompts around each block, routes blocks through adapters,
and adds the heads and proxies. With zero prompts and no adapters the features are exactly timm's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import nn
from timm.models.vision_transformer import VisionTransformer

from ..config import ConfigError, ModelConfig
from .adapters import Adapter, adapted_block_forward
from .backbone import create_backbone
from ..data.batch_classes import BatchClasses
from .heads import EmbeddingHead
from .methods import get_method
from .prompts import DeepPrompts, prompt_counts
from .semantic import SemanticProxies

__all__ = ["PromptedViT", "TrainOutput", "build_model", "SEMANTIC_BIAS_INIT_NORM"]

# The paper code starts the proxy bias tiny next to the unit-norm semantic state (method.md 2).
SEMANTIC_BIAS_INIT_NORM = 0.16


@dataclass
class TrainOutput:
    """What a training forward gives the loss."""

    embeddings: torch.Tensor            # (B, E) unit-norm sample embeddings
    proxies: torch.Tensor               # (C, E) the proxies the loss compares with
    semantic: Optional[torch.Tensor]    # (B, E) semantic proxies of the samples (vptsp only)


def _check_depth(where: str, cfg: ModelConfig, key: str, value: int, num_layers: int) -> None:
    if value > num_layers:
        raise ConfigError(f"{where}: key '{key}' is {value} but backbone '{cfg.backbone}' has {num_layers} blocks")


class PromptedViT(nn.Module):
    """A frozen (or fully trained) timm ViT with prompts, adapters, heads and proxies.

    Args:
        backbone: a timm ``VisionTransformer`` built with ``num_classes=0``.
        cfg: the model section of the config.
        num_classes: training classes (one proxy, and for vptsp one class-prompt set, each).
        where: where ``cfg`` came from, for errors (a file, or "model").
    """

    def __init__(self, backbone: VisionTransformer, cfg: ModelConfig, num_classes: int, where: str = "model") -> None:
        super().__init__()
        self.cfg, self.spec, self.num_classes = cfg, get_method(cfg.method), num_classes
        self.backbone = backbone
        dim, num_layers = backbone.embed_dim, len(backbone.blocks)
        patch = backbone.patch_embed.patch_size[0]
        if min(backbone.patch_embed.grid_size) < 1:
            raise ConfigError(f"{where}: key 'img_size' is {cfg.img_size} but backbone '{cfg.backbone}' has "
                              f"{patch}-pixel patches: an image needs at least one")
        self.num_prefix_tokens = backbone.num_prefix_tokens

        self.prompts: Optional[DeepPrompts] = None
        if self.spec.prompts:
            _check_depth(where, cfg, "prompt_depth", cfg.prompt_depth, num_layers)
            self.prompts = DeepPrompts(prompt_counts(cfg.num_prompts, cfg.prompt_depth, cfg.prompt_step, num_layers),
                                       dim, patch)
        self.adapters = nn.ModuleDict()
        if self.spec.adapters:
            _check_depth(where, cfg, "adapter_layers", cfg.adapter_layers, num_layers)
            for i in range(num_layers - cfg.adapter_layers, num_layers):
                self.adapters[str(i)] = Adapter(
                    dim, cfg.adapter_dim, position=cfg.adapter_position, norm=cfg.adapter_norm,
                    init=cfg.adapter_init, scale=cfg.adapter_scale, dropout=cfg.adapter_dropout)
        self.head = EmbeddingHead(dim, cfg.embedding_dim)
        self.proxy_bias = nn.Parameter(torch.empty(num_classes, cfg.embedding_dim))
        self.semantic: Optional[SemanticProxies] = None
        if self.spec.accumulator is not None:
            _check_depth(where, cfg, "class_prompt_depth", cfg.class_prompt_depth, num_layers)
            counts = prompt_counts(cfg.class_prompts, cfg.class_prompt_depth, cfg.class_prompt_step, num_layers)
            self.semantic = SemanticProxies(num_classes, dim, cfg.embedding_dim, counts, patch,
                                            self.spec.accumulator, cfg)
            nn.init.normal_(self.proxy_bias, std=SEMANTIC_BIAS_INIT_NORM / cfg.embedding_dim ** 0.5)
        else:
            nn.init.kaiming_normal_(self.proxy_bias, mode="fan_out")  # Proxy-Anchor's init
        self._freeze()

    # -- trainability ------------------------------------------------------------------------
    def _freeze(self) -> None:
        self.backbone.requires_grad_(self.spec.train_backbone)
        if self.spec.trains_biases(self.cfg.bitfit):
            for name, param in self.backbone.named_parameters():
                if name.endswith("bias"):
                    param.requires_grad_(True)

    def train(self, mode: bool = True) -> "PromptedViT":
        """Train the added modules; a frozen backbone stays in eval mode (no dropout, drop-path)."""
        super().train(mode)
        if not self.spec.train_backbone:
            self.backbone.eval()
        return self

    def proxy_parameters(self) -> list[nn.Parameter]:
        """Parameters optimised at ``lr_proxy``: the ordinary proxies (the proxy bias)."""
        return [self.proxy_bias]

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Every other dense trainable parameter (optimised at ``lr``).

        The class-prompt bank is not among them: its rows are updated by the bank's own
        row-sparse optimiser (``model.semantic.bank.optimizer(...)``).
        """
        proxies = {id(p) for p in self.proxy_parameters()}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in proxies]

    # -- forward -------------------------------------------------------------------------------
    def embed_patches(self, images: torch.Tensor) -> torch.Tensor:
        """The tokens (B, N, D) entering the first block: patches, position embedding, prefix tokens."""
        bb = self.backbone
        return bb.norm_pre(bb.patch_drop(bb._pos_embed(bb.patch_embed(images))))

    def encode(self, images: torch.Tensor, layer_prompts: Sequence[Optional[torch.Tensor]],
               tokens: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Pooled backbone features (B, D) with ``layer_prompts[i]`` (B, n_i, D) around block i.

        ``tokens``: the images' :meth:`embed_patches`, when already computed (passes share them).
        """
        bb = self.backbone
        x = self.embed_patches(images) if tokens is None else tokens
        num_tokens = x.shape[1]
        for i, block in enumerate(bb.blocks):
            prompts = layer_prompts[i]
            if prompts is not None:
                x = torch.cat([x, prompts.to(x.dtype)], dim=1)
            adapter = self.adapters[str(i)] if str(i) in self.adapters else None
            x = block(x) if adapter is None else adapted_block_forward(block, adapter, x)
            if prompts is not None:
                x = x[:, :num_tokens]
        return bb.forward_head(bb.norm(x), pre_logits=True)

    def sample_prompts(self, batch_size: int) -> list[Optional[torch.Tensor]]:
        num_layers = len(self.backbone.blocks)
        if self.prompts is None:
            return [None] * num_layers
        return [self.prompts.layer(i, batch_size) for i in range(num_layers)]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-norm embeddings (B, E): the sample branch only, as at evaluation."""
        return self.head(self.encode(images, self.sample_prompts(images.shape[0])))

    def forward_train(self, images: torch.Tensor, labels: torch.Tensor,
                      groups: Optional[BatchClasses] = None) -> TrainOutput:
        """Embeddings plus the proxies for the loss; for vptsp also runs the proxy pass.

        ``groups`` is the batch's class grouping (the loader builds it on the host); computed here
        from ``labels`` when not given, which on a GPU costs host syncs. Labels outside
        [0, num_classes) are a ValueError raised on the host before any kernel runs.
        """
        if groups is None:
            groups = BatchClasses.from_labels(labels)
        groups.check_labels(self.num_classes)
        if self.semantic is None:
            return TrainOutput(self(images), self.proxy_bias, None)
        # Both passes start from the same patch tokens (the prompts join inside the blocks): embed once.
        tokens = self.embed_patches(images)
        embeddings = self.head(self.encode(images, self.sample_prompts(images.shape[0]), tokens))
        classes, inverse = groups.classes, groups.inverse
        bank = self.semantic.bank
        class_rows = bank.gather(groups.classes_on(bank.storage_device), images.device)
        sample = self.sample_prompts(images.shape[0]) if self.cfg.proxy_prompts == "class+sample" else None
        layer_prompts = []
        for i, rows in enumerate(class_rows):
            prompts = None if rows is None else rows.index_select(0, inverse)
            if sample is not None and sample[i] is not None:
                prompts = sample[i] if prompts is None else torch.cat([sample[i], prompts], dim=1)
            layer_prompts.append(prompts)
        semantic = self.semantic.head(self.encode(images, layer_prompts, tokens))
        fresh = self.semantic.accumulate(semantic, groups)
        return TrainOutput(embeddings, self.semantic.fuse(self.proxy_bias, fresh, classes), semantic)

    def current_proxies(self) -> torch.Tensor:
        """The proxies as they stand (stored states for vptsp), without a forward."""
        return self.proxy_bias if self.semantic is None else self.semantic.fuse(self.proxy_bias)


def build_model(cfg: ModelConfig, num_classes: int, *, where: str = "model") -> PromptedViT:
    """Create the backbone named by ``cfg`` (hub, local file or random init) and wrap it.

    Impossible settings and a model too large for the machine are one-line ConfigErrors naming
    ``where``, raised before anything is allocated.
    """
    from .memory import check_model_memory  # here: memory.py builds this module's PromptedViT on the meta device
    check_model_memory(cfg, num_classes, where=where)
    backbone = create_backbone(cfg.backbone, weights=cfg.weights, pretrained=cfg.pretrained, img_size=cfg.img_size)
    return PromptedViT(backbone, cfg, num_classes, where=where)
