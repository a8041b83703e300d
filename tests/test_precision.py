"""Frozen weights stored at the autocast dtype (``semproxy.models.precision``): a step under autocast
computes exactly what it computed when autocast cast those weights at every call, without the casts.

Checked on the CPU under its bf16 autocast, which casts linear layers and convolutions as CUDA's does
(a Trainer lowers the weights itself on a GPU with ``amp``; ``tests/test_gpu.py`` runs that path).
"""
from __future__ import annotations

import dataclasses

import pytest
import torch

from conftest import NUM_CLASSES, micro_config
from semproxy.checkpoint import backbone_hash, trained_state
from semproxy.config import Config
from semproxy.data import BatchClasses
from semproxy.data.loader import TrainBatch
from semproxy.models.precision import LOWERED_MODULES, lower_frozen_weights
from semproxy.train import Trainer
from semproxy.train.ops import count_ops


def _trainer(method: str) -> Trainer:
    config = Config().replace({**dataclasses.asdict(micro_config(method=method)), "batch_size": 8,
                               "optimizer": "adamw"})
    torch.manual_seed(0)
    return Trainer(config, None, torch.device("cpu"), num_classes=NUM_CLASSES)


def _batches() -> list[TrainBatch]:
    generator = torch.Generator().manual_seed(1)
    batches = []
    for classes in ([4, 0, 2, 5], [1, 3, 0, 2]):
        labels = torch.tensor(classes).repeat_interleave(2)
        batches.append(TrainBatch(torch.randn(8, 3, 32, 32, generator=generator), labels,
                                  BatchClasses.from_labels(labels)))
    return batches


def _steps(trainer: Trainer):
    """Two steps under bf16 autocast: the losses, the casts of the second, the trained tensors after."""
    first, second = _batches()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = [trainer.step(first).loss]
        out, count = count_ops(trainer.step, second)
    return losses + [out.loss], count.kernels_by_name["_to_copy"], trained_state(trainer.model)


@pytest.mark.parametrize("method", ["vpt", "vptsp_gru", "bitfit", "lora"])
def test_lowered_frozen_weights_give_the_same_steps_with_fewer_casts(method):
    reference, lowered = _trainer(method), _trainer(method)
    loaded_hash = backbone_hash(lowered.model)
    cast = lower_frozen_weights(lowered.model, torch.bfloat16)
    frozen = [p for m in lowered.model.modules() if isinstance(m, LOWERED_MODULES)
              for p in m.parameters(recurse=False) if not p.requires_grad]
    assert cast == len(frozen) > 0 and all(p.dtype == torch.bfloat16 for p in frozen)
    assert all(p.dtype == torch.float32 for p in lowered.model.parameters() if p.requires_grad)
    assert backbone_hash(lowered.model) != loaded_hash  # why a Trainer hashes the weights before lowering

    losses, casts, trained = _steps(reference)
    lowered_losses, lowered_casts, lowered_trained = _steps(lowered)
    assert [float(x) for x in lowered_losses] == [float(x) for x in losses]
    assert trained.keys() == lowered_trained.keys()
    for name, tensor in trained.items():
        assert torch.equal(lowered_trained[name], tensor), name
    assert lowered_casts <= casts - cast, (casts, lowered_casts)  # one cast fewer per lowered tensor, at least


def test_nothing_trained_is_lowered_and_a_second_call_casts_nothing():
    trainer = _trainer("full")  # everything trains: nothing to lower
    assert lower_frozen_weights(trainer.model, torch.bfloat16) == 0
    vpt = _trainer("vpt")
    assert lower_frozen_weights(vpt.model, torch.bfloat16) > 0
    assert lower_frozen_weights(vpt.model, torch.bfloat16) == 0
