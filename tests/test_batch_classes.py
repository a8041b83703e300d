"""The host-built class grouping of a batch, against a plain Python reference."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

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


def test_the_training_forward_uses_a_given_grouping_as_a_per_class_reference_does(monkeypatch):
    """Uneven, interleaved classes: each class's EMA state takes the mean of its own samples' semantic proxies.

    The grouping is built beforehand (as the loader does) and must not be built again in the forward.
    """
    torch.manual_seed(0)
    model = build_model(micro_config(method="vptsp_ema"), 10).double().train()
    images, labels = torch.randn(6, 3, 32, 32, dtype=torch.float64), torch.tensor([3, 7, 3, 1, 7, 7])
    groups = BatchClasses.from_labels(labels)
    monkeypatch.setattr(BatchClasses, "from_labels", None)  # the forward may not group again
    before = model.semantic.state.clone()
    out = model.forward_train(images, labels, groups)
    keep, lam = model.cfg.ema_keep, model.cfg.proxy_bias_ratio
    expected = before.clone()
    for c in (1, 3, 7):
        state = keep * before[c] + (1 - keep) * out.semantic[labels == c].mean(0)
        expected[c] = state / state.norm()
    fused = lam * model.proxy_bias + (1 - lam) * expected
    torch.testing.assert_close(model.semantic.state, expected.detach())
    torch.testing.assert_close(out.proxies, fused / fused.norm(dim=1, keepdim=True))


class _FloatOpCounter(TorchDispatchMode):
    """Counts the aten operations on floating-point tensors (images, parameters) dispatched while active."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        tensors = [a for a in (*args, *(kwargs or {}).values()) if isinstance(a, torch.Tensor)]
        self.ops += any(t.is_floating_point() for t in tensors)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("method", ["vpt", "vptsp_gru"])
@pytest.mark.parametrize("labels", [[1, 1, 4, 4, 6, 6], [-1, -1, 0, 0, 2, 2]])
def test_labels_outside_the_classes_are_refused_on_the_host_before_any_computation(method, labels):
    model = build_model(micro_config(method=method), 6).train()
    labels = torch.tensor(labels)
    groups = BatchClasses.from_labels(labels)
    with _FloatOpCounter() as counter, pytest.raises(ValueError, match=r"labels must be class indices in \[0, 6\)"):
        model.forward_train(torch.randn(6, 3, 32, 32), labels, groups)
    assert counter.ops == 0
    with pytest.raises(ValueError, match=r"in \[0, 6\)"):  # without a grouping: the same check
        model.forward_train(torch.randn(6, 3, 32, 32), labels)


@pytest.mark.gpu
def test_an_out_of_range_label_on_a_gpu_leaves_cuda_usable():
    """A device-side assert would break every later CUDA call of the process: the host check comes first."""
    model = build_model(micro_config(method="vptsp_gru"), 6).cuda().train()
    labels = torch.tensor([1, 1, 4, 4, 6, 6])
    groups = BatchClasses.from_labels(labels).to("cuda")
    with pytest.raises(ValueError, match="labels must be class indices"):
        model.forward_train(torch.randn(6, 3, 32, 32, device="cuda"), labels.cuda(), groups)
    torch.cuda.synchronize()
    assert float(torch.ones(3, device="cuda").sum()) == 3.0
