"""Embedding a cached split and scoring it: the evaluation shared by training, search and final runs."""
from __future__ import annotations

import contextlib
from typing import Any, Literal, Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .checkpoint import backbone_hash, check_compatible, load_checkpoint, restore_trained
from .config import RUNTIME, Config, ConfigError
from .data.cache import EvalImageCache
from .data.loader import eval_batches
from .device import resolve_device
from .host_memory import keep_freed_host_memory
from .metric_names import split_metrics
from .metrics import retrieval_metrics
from .models import PromptedViT, build_model
from .models.precision import lower_frozen_weights
from .prepared import PreparedData, prepare_data
from .typed_config import unknown_key

__all__ = ["embed", "evaluate", "amp_dtype", "prepare_amp", "autocast_to", "autocast_for", "knn_device",
           "evaluate_checkpoint", "check_runtime_overrides"]


def amp_dtype(device: torch.device, enabled: bool) -> Optional[torch.dtype]:
    """The dtype mixed precision computes in on ``device``: bf16 on GPUs with bf16 units (Ampere and
    later; emulated bf16 on older ones is slow, they get fp16), fp16 otherwise; None on the CPU or when
    ``enabled`` (the ``amp`` knob) is off. Asks the driver: outside a compiled region only."""
    if not enabled or device.type != "cuda":
        return None
    with torch.cuda.device(device):
        native = torch.cuda.is_bf16_supported(including_emulation=False)
    return torch.bfloat16 if native else torch.float16


def prepare_amp(model: torch.nn.Module, device: torch.device, enabled: bool) -> Optional[torch.dtype]:
    """:func:`amp_dtype` for ``model`` on ``device``, its frozen weights lowered to it
    (:func:`~semproxy.models.precision.lower_frozen_weights`: what autocast would cast them to at every
    call); None, and the model untouched, where mixed precision is off. Take the backbone hash before."""
    dtype = amp_dtype(device, enabled)
    if dtype is not None:
        lower_frozen_weights(model, dtype)
    return dtype


def autocast_to(device: torch.device, dtype: Optional[torch.dtype]) -> contextlib.AbstractContextManager:
    """Autocast on ``device`` to ``dtype``, or nothing where that is None (traceable by Dynamo)."""
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def autocast_for(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """Autocast to :func:`amp_dtype`, or nothing where that is None."""
    return autocast_to(device, amp_dtype(device, enabled))


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
    where = knn_device(device)
    if split == "test" and data.gallery is not None:
        gallery = embed(model, data.gallery, data, batch_size, device, amp=amp, progress=progress,
                        desc="embedding gallery")
        return retrieval_metrics(gallery, data.gallery.labels, recall_ks=data.recall_ks,
                                 query_embeddings=embeddings, query_labels=cache.labels, **where)
    return retrieval_metrics(embeddings, cache.labels, recall_ks=data.recall_ks, **where)


def knn_device(device: torch.device) -> dict[str, Any]:
    """Where the kNN search of a run on ``device`` runs: on its GPU when faiss has GPUs, never on another
    one, and on the CPU for a CPU run (a CPU trial on a GPU machine may still see every GPU)."""
    if device.type != "cuda":
        return {"use_gpu": False}
    return {"use_gpu": None, "gpu_device": device.index if device.index is not None else torch.cuda.current_device()}


def check_runtime_overrides(overrides: Sequence[str], where: str = "--set") -> None:
    """Refuse an override of a field that is not a runtime field, before any work: the trained model is
    evaluated with the config it was trained with (a changed ``lr`` would only be refused later, as a
    checkpoint "made with another config"); an unknown key suggests the closest runtime field. Items that are
    not ``key=value`` and bad values are left to :meth:`Config.with_overrides`."""
    runtime = Config.fields_with(RUNTIME)
    for item in overrides:
        key, sep, _ = item.partition("=")
        key = key.strip()
        if not sep or not key or key in runtime:
            continue
        if key not in Config.section_of():
            raise unknown_key(key, sorted(runtime), where)
        raise ConfigError(f"{where} {key}: not a field evaluation may change (the checkpoint is evaluated with "
                          f"the config it was trained with); {where} may change {', '.join(sorted(runtime))}")


def evaluate_checkpoint(path: str, overrides: Sequence[str] = (), *, progress: bool = True) -> dict[str, float]:
    """Test metrics of the model saved in ``path`` (runtime fields may be overridden, e.g. data_root).

    The backbone is rebuilt from the checkpoint's config and checked against its weights hash. The
    entry point of an evaluation run, as ``semproxy.train.fit`` is of a training run, it owns the
    process's memory setting: on a CPU it keeps freed host memory for reuse (``semproxy.host_memory``).
    """
    check_runtime_overrides(overrides)
    payload = load_checkpoint(path)
    config = Config.from_mapping(payload["config"], where=f"{path} (config)").with_overrides(list(overrides))
    config = config.replace({"test_eval": True})
    device = resolve_device(config.eval.device, where=f"{path} (config)")  # before any work
    data = prepare_data(config, with_test=True, progress=progress)
    if device.type == "cpu":  # as training does: activations reused batch after batch, not re-faulted
        keep_freed_host_memory()
    model = build_model(config.model, len(np.unique(data.train.labels)), where=f"{path} (config)")
    check_compatible(payload, config, backbone_hash(model), where=str(path))
    restore_trained(model, payload, where=str(path))
    model.to(device)
    prepare_amp(model, device, config.optim.amp)
    metrics = evaluate(model, data, "test", config.eval.eval_batch_size, device, amp=config.optim.amp,
                       progress=progress)
    return split_metrics("test", metrics)
