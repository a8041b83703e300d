"""The host-built class grouping of a batch, against a plain Python reference."""
import pytest
import torch

from semproxy.models import BatchClasses, build_model
from conftest import micro_config


def _reference(labels: list[int]) -> tuple[list[int], list[list[int]]]:
    classes = sorted(set(labels))
    return classes, [[i for i, y in enumerate(labels) if y == c] for c in classes]


@pytest.mark.parametrize("seed", range(5))
def test_grouping_matches_a_python_reference(seed):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 7, (int(torch.randint(1, 20, (1,), generator=generator)),), generator=generator)
    groups = BatchClasses.from_labels(labels)
    classes, members = _reference(labels.tolist())
    assert groups.classes.tolist() == classes and groups.host_classes.tolist() == classes
    assert groups.group_size == max(len(m) for m in members)
    values = torch.randn(labels.numel(), 3, generator=generator)
    arranged = groups.arrange(values)
    for g, rows in enumerate(members):
        torch.testing.assert_close(arranged[g, :len(rows)], values[rows], rtol=0, atol=0)
        assert not arranged[g, len(rows):].any()
        if groups.mask is not None:
            assert groups.mask[g].tolist() == [k < len(rows) for k in range(groups.group_size)]
    uniform = all(len(m) == groups.group_size for m in members)
    assert (groups.mask is None) == uniform


def test_balanced_batches_need_no_mask_and_moving_keeps_host_classes():
    groups = BatchClasses.from_labels(torch.tensor([4, 4, 9, 9, 2, 2]))
    assert groups.mask is None and groups.group_size == 2
    moved = groups.to("meta")
    assert moved.classes.device.type == "meta" and moved.host_classes.device.type == "cpu"
    assert moved.classes_on(torch.device("cpu")) is groups.host_classes


def test_given_grouping_gives_the_same_training_forward_as_labels_alone():
    torch.manual_seed(0)
    model = build_model(micro_config(method="vptsp_gru"), 10).train()
    images, labels = torch.randn(6, 3, 32, 32), torch.tensor([3, 3, 7, 7, 1, 1])
    state = model.semantic.state.clone()
    derived = model.forward_train(images, labels)
    model.semantic.state.copy_(state)
    given = model.forward_train(images, labels, BatchClasses.from_labels(labels))
    torch.testing.assert_close(given.proxies, derived.proxies, rtol=0, atol=0)
    torch.testing.assert_close(given.semantic, derived.semantic, rtol=0, atol=0)
