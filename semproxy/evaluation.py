"""Embedding a cached split and scoring it: the evaluation shared by training, search and final runs."""
from __future__ import annotations

import contextlib
from typing import Literal, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from .data.cache import EvalImageCache
from .data.loader import eval_batches
from .data.prepared import PreparedData
from .metrics import retrieval_metrics
from .models import PromptedViT

__all__ = ["embed", "evaluate", "autocast_for"]


def autocast_for(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on GPUs that support it, fp16 on older ones, nothing on CPU."""
    if not enabled or device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


@torch.no_grad()
def embed(model: PromptedViT, cache: EvalImageCache, data: PreparedData, batch_size: int, device: torch.device,
          *, amp: bool = True, progress: bool = True, desc: str = "embedding") -> np.ndarray:
    """(N, E) float32 embeddings of a cached split, in cache order."""
    was_training = model.training
    model.eval()
    chunks = []
    batches = eval_batches(cache, batch_size, data.image.mean, data.image.std, device)
    total = (len(cache) + batch_size - 1) // batch_size
    for images in tqdm(batches, total=total, desc=desc, leave=False, disable=not progress):
        with autocast_for(device, amp):
            chunks.append(model(images).float().cpu())
    model.train(was_training)
    return torch.cat(chunks).numpy() if chunks else np.zeros((0, model.cfg.embedding_dim), np.float32)


def evaluate(model: PromptedViT, data: PreparedData, split: Literal["val", "test"], batch_size: int,
             device: torch.device, *, amp: bool = True, progress: bool = True) -> dict[str, float]:
    """Retrieval metrics of ``split``: leave-one-out, or query -> gallery for In-Shop's test."""
    cache: Optional[EvalImageCache] = data.val if split == "val" else data.test
    if cache is None:
        raise ValueError(f"no {split} split was prepared")
    embeddings = embed(model, cache, data, batch_size, device, amp=amp, progress=progress, desc=f"embedding {split}")
    if split == "test" and data.gallery is not None:
        gallery = embed(model, data.gallery, data, batch_size, device, amp=amp, progress=progress,
                        desc="embedding gallery")
        return retrieval_metrics(gallery, data.gallery.labels, recall_ks=data.recall_ks,
                                 query_embeddings=embeddings, query_labels=cache.labels)
    return retrieval_metrics(embeddings, cache.labels, recall_ks=data.recall_ks)
