"""The prompted ViT: a timm VisionTransformer plus whatever the fine-tuning method adds and trains.

The backbone's own modules run the forward (patch embedding, position embedding, blocks, final
norm, pooling); the method (``semproxy.models.methods``) adds its modules, which join the blocks
through hooks, and per-block prompts, which this class appends around each block; this class adds the
heads and the proxies. With zero-initialised additions the features are exactly timm's. VPTSP's two
passes (sample prompts, class prompts) run as one batch through the blocks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import nn
from timm.models.vision_transformer import VisionTransformer

from ..config import ConfigError, ModelConfig
from .backbone import create_backbone
from ..data.batch_classes import BatchClasses
from .heads import EmbeddingHead
from .methods import get_method
from .semantic import SemanticProxies
from .prompts import padding_mask, stack_passes
from .timm_compat import embed_tokens

__all__ = ["PromptedViT", "TrainOutput", "build_model", "SEMANTIC_BIAS_INIT_NORM"]

# The paper code starts the proxy bias tiny next to the unit-norm semantic state (method.md 2).
SEMANTIC_BIAS_INIT_NORM = 0.16
# Attributes of the model itself: a method's modules may not take these names.
RESERVED_NAMES = frozenset({"backbone", "head", "proxy_bias", "semantic", "method"})


@dataclass
class TrainOutput:
    """What a training forward gives the loss and the optimisers."""

    embeddings: torch.Tensor                  # (B, E) unit-norm sample embeddings
    proxies: torch.Tensor                     # (C, E) the proxies the loss compares with
    semantic: Optional[torch.Tensor]          # (B, E) semantic proxies of the samples (vptsp only)
    class_rows: Optional[torch.Tensor] = None  # (G, S, D) the batch classes' class prompts, a leaf (vptsp only)
    row_classes: Optional[torch.Tensor] = None  # (G,) their classes, on the bank's storage device (vptsp only)


def _check_image_size(backbone: VisionTransformer, cfg: ModelConfig, where: str) -> None:
    if min(backbone.patch_embed.grid_size) < 1:
        raise ConfigError(f"{where}: key 'img_size' is {cfg.img_size} but backbone '{cfg.backbone}' has "
                          f"{backbone.patch_embed.patch_size[0]}-pixel patches: an image needs at least one")


class PromptedViT(nn.Module):
    """A frozen (or fully trained) timm ViT with what the method adds, heads and proxies.

    Args:
        backbone: a timm ``VisionTransformer`` built with ``num_classes=0``.
        cfg: the model section of the config; ``cfg.method`` names the registered method.
        num_classes: training classes (one proxy, and for vptsp one class-prompt set, each).
        where: where ``cfg`` came from, for errors (a file, or "model").
    """

    def __init__(self, backbone: VisionTransformer, cfg: ModelConfig, num_classes: int, where: str = "model") -> None:
        super().__init__()
        self.cfg, self.num_classes = cfg, num_classes
        self.backbone = backbone
        _check_image_size(backbone, cfg, where)
        self.num_prefix_tokens = backbone.num_prefix_tokens
        self.method = get_method(cfg.method)(cfg, backbone, where)
        for name, module in self.method.build(backbone).items():
            if name in RESERVED_NAMES:
                raise ValueError(f"method '{cfg.method}' names a module '{name}', an attribute of the model")
            self.add_module(name, module)
        self.head = EmbeddingHead(backbone.embed_dim, cfg.embedding_dim)
        self.proxy_bias = nn.Parameter(torch.empty(num_classes, cfg.embedding_dim))
        self.semantic: Optional[SemanticProxies] = self.method.semantic_proxies(num_classes)
        if self.semantic is not None:
            nn.init.normal_(self.proxy_bias, std=SEMANTIC_BIAS_INIT_NORM / cfg.embedding_dim ** 0.5)
        else:
            nn.init.kaiming_normal_(self.proxy_bias, mode="fan_out")  # Proxy-Anchor's init
        for name, param in backbone.named_parameters():
            param.requires_grad_(self.method.trains_parameter(name))

    # -- trainability ------------------------------------------------------------------------
    def train(self, mode: bool = True) -> "PromptedViT":
        """Train the added modules; a frozen backbone stays in eval mode (no dropout, drop-path)."""
        super().train(mode)
        if not self.method.trains_backbone:
            self.backbone.eval()
        return self

    def proxy_parameters(self) -> list[nn.Parameter]:
        """Parameters optimised at ``lr_proxy``: the ordinary proxies (the proxy bias) and any the method names."""
        return [self.proxy_bias, *self.method.proxy_parameters()]

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
        return embed_tokens(self.backbone, images)

    def encode(self, images: torch.Tensor, layer_prompts: Sequence[Optional[torch.Tensor]]) -> torch.Tensor:
        """Pooled backbone features (B, D) with ``layer_prompts[i]`` (B, n_i, D) around block i."""
        return self.encode_passes(images, [layer_prompts])[0]

    def encode_passes(self, images: torch.Tensor,
                      passes: Sequence[Sequence[Optional[torch.Tensor]]]) -> list[torch.Tensor]:
        """Pooled features (B, D) of each of several prompted passes over ``images``, run as one batch.

        ``passes[j][i]`` (B, n_ji, D): pass j's prompts around block i, or None. The passes share one
        patch embedding, and each block runs once over P x B sequences: every pass's prompts padded to
        the widest count (``stack_passes``), the padding hidden from attention (``padding_mask``), so
        each pass computes what it would alone. On a GPU, where an eager step is bound by launching
        kernels, that launches one pass's kernels instead of P passes'.
        """
        bb, masks = self.backbone, {}
        tokens = self.embed_patches(images)
        batch, num_tokens = tokens.shape[:2]
        x = tokens if len(passes) == 1 else tokens.repeat(len(passes), 1, 1)
        for i, block in enumerate(bb.blocks):
            prompts, counts = stack_passes([layer_prompts[i] for layer_prompts in passes], x)
            if prompts is None:
                x = block(x)
                continue
            if counts not in masks:
                masks[counts] = padding_mask(counts, num_tokens, x)
            x = block(torch.cat([x, prompts], dim=1), attn_mask=masks[counts])[:, :num_tokens]
        features = bb.forward_head(bb.norm(x), pre_logits=True)
        return list(features.split(batch)) if len(passes) > 1 else [features]

    def sample_prompts(self, batch_size: int) -> list[Optional[torch.Tensor]]:
        """The method's prompts per block for the sample branch (None where a block has none)."""
        return self.method.sample_prompts(batch_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-norm embeddings (B, E): the sample branch only, as at evaluation."""
        return self.head(self.encode(images, self.sample_prompts(images.shape[0])))

    def forward_train(self, images: torch.Tensor, labels: torch.Tensor,
                      groups: Optional[BatchClasses] = None) -> TrainOutput:
        """Embeddings plus the proxies for the loss; for vptsp also runs the proxy pass.

        ``groups`` is the batch's class grouping (the loader builds it on the host); computed here
        from ``labels`` when not given, which on a GPU costs host syncs. Labels outside
        [0, num_classes) are a ValueError raised on the host before any kernel runs. The device
        work is :meth:`train_outputs`; in training mode the class-prompt rows it gathered are then
        handed to the bank's optimiser, so that its ``step()`` after ``backward()`` updates them (a
        Trainer's step calls :meth:`train_outputs` and passes the rows to the optimiser itself).
        """
        if groups is None:
            groups = BatchClasses.from_labels(labels)
        groups.check_labels(self.num_classes)
        out = self.train_outputs(images, groups)
        if out.class_rows is not None and self.training:
            self.semantic.bank.activate(out.row_classes, out.class_rows)
        return out

    def train_outputs(self, images: torch.Tensor, groups: BatchClasses) -> TrainOutput:
        """The training forward of a batch whose labels were checked: device work only.

        No host sync and no branch on tensor values (what a compiled step traces). The class-prompt
        rows the proxy pass used come back as ``class_rows``, a leaf whose gradient the bank's
        optimiser applies to the rows of ``groups.classes``. The sample and proxy passes run as one
        batch (:meth:`encode_passes`).
        """
        if self.semantic is None:
            return TrainOutput(self(images), self.proxy_bias, None)
        bank = self.semantic.bank
        classes = groups.classes_on(bank.storage_device)
        rows = bank.gather(classes, images.device)
        features, proxy_features = self.encode_passes(
            images, [self.sample_prompts(images.shape[0]), self._proxy_pass_prompts(rows, groups)])
        embeddings, semantic = self.head(features), self.semantic.head(proxy_features)
        fresh = self.semantic.accumulate(semantic, groups)
        return TrainOutput(embeddings, self.semantic.fuse(self.proxy_bias, fresh, groups.classes), semantic, rows,
                           None if rows is None else classes)

    def _proxy_pass_prompts(self, rows: Optional[torch.Tensor], groups: BatchClasses) -> list[Optional[torch.Tensor]]:
        """Per block, each image's class prompts (after the sample prompts with ``proxy_prompts: class+sample``).

        ``rows`` (G, S, D) hold every layer's prompts of the batch's classes: one gather gives each image
        its class's, and the layers are views of that.
        """
        per_image = None if rows is None else rows.index_select(0, groups.inverse)
        class_prompts = self.semantic.bank.layers(per_image)
        if self.cfg.proxy_prompts == "class":
            return class_prompts
        sample = self.sample_prompts(groups.inverse.shape[0])
        return [c if s is None else s if c is None else torch.cat([s, c], dim=1) for s, c in zip(sample, class_prompts)]

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
