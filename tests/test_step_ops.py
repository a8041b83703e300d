"""How many aten operations one training step dispatches, per method: a budget each, and no host read.

An eager step on a GPU is bound by launching its kernels from Python; the dispatched operations are
those launches (``semproxy.train.ops``) and their number does not depend on the data, the image
size or the device (autocast's casts aside), so it is checked here on the CPU, with conftest's micro
ViT and batches of 4 classes x 2. ``BUDGETS`` holds each method's count as measured when it was last
changed; a step may dispatch up to ``MARGIN`` more. A change that adds operations on purpose updates
the budget: ``python tests/test_step_ops.py`` prints the current counts in the table's form.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch

from conftest import NUM_CLASSES, micro_config
from semproxy.config import Config
from semproxy.data import BatchClasses
from semproxy.data.loader import TrainBatch
from semproxy.models import METHODS
from semproxy.train import Trainer
from semproxy.train.ops import OpCount, count_ops

# method -> (operations, of which kernels) of one SGD step; measured 2026-11-23 with torch 2.14.1.
BUDGETS = {
    "full": (1137, 491),
    "linear": (480, 234),
    "bitfit": (943, 441),
    "adapter": (597, 290),
    "vpt": (869, 401),
    "vptsp_ema": (1010, 504),
    "vptsp_gru": (1100, 559),
    "lora": (1548, 685),
}
MARGIN = 0.01  # tolerated growth: 1%, a handful of operations


def step_ops(method: str) -> OpCount:
    """The operations of one SGD training step of ``method``: the second, so that no one-time work counts."""
    model = dataclasses.asdict(micro_config(method=method))
    config = Config().replace({**model, "batch_size": 8, "optimizer": "sgd"})
    torch.manual_seed(0)
    trainer = Trainer(config, None, torch.device("cpu"), num_classes=NUM_CLASSES)
    batches = []
    for classes in ([4, 0, 2, 5], [1, 3, 0, 2]):
        labels = torch.tensor(classes).repeat_interleave(2)
        batches.append(TrainBatch(torch.randn(8, 3, 32, 32), labels, BatchClasses.from_labels(labels)))
    trainer.step(batches[0])
    return count_ops(trainer.step, batches[1])[1]


@pytest.mark.parametrize("method", list(METHODS))
def test_a_step_dispatches_no_more_operations_than_its_budget(method):
    assert set(BUDGETS) == set(METHODS), "a new method needs its budget: python tests/test_step_ops.py"
    count, (total, kernels) = step_ops(method), BUDGETS[method]
    message = (f"{method}: {count.total} operations ({count.kernels} kernels), budget {total} ({kernels}); "
               f"most frequent kernels: {count.kernels_by_name.most_common(8)}. On purpose? Update BUDGETS.")
    assert count.total <= total * (1 + MARGIN) and count.kernels <= kernels * (1 + MARGIN), message


@pytest.mark.parametrize("method", ["vpt", "vptsp_gru"])
def test_a_step_reads_nothing_back_to_the_host(method):
    """A read of a tensor's value (``.item()``, ``bool(t)``, ``int(t)``) dispatches _local_scalar_dense:
    on a GPU, a sync. With SGD the step has none (torch's eager Adam reads its host-side step counts)."""
    assert "_local_scalar_dense" not in step_ops(method).kernels_by_name


if __name__ == "__main__":
    for name in METHODS:
        ops = step_ops(name)
        print(f'    "{name}": ({ops.total}, {ops.kernels}),')
