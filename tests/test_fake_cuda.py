"""Every method's forward, Proxy-Anchor loss and optimiser updates on CUDA tensors, without a GPU.

CI never has a GPU, so a tensor that a step makes on the host (a device mismatch only a GPU run
would raise) would go unseen until one ran. torch's ``FakeTensorMode`` gives tensors a device, dtype
and shape but no storage: here the model's parameters and the batch are "cuda" tensors, the forward
runs under CUDA autocast with the frozen weights lowered as a GPU run lowers them, the optimisers
update them, and torch raises on any operation that mixes devices or dtypes. Autograd's engine
needs a real CUDA context, so the backward itself is the GPU tests' (``pytest -m gpu``).
"""
from __future__ import annotations

import copy
from typing import Optional

import pytest
import torch
from torch._subclasses.fake_tensor import FakeCopyMode, FakeTensorMode

from conftest import micro_config
from semproxy.config import OptimConfig
from semproxy.data import BatchClasses
from semproxy.evaluation import autocast_to
from semproxy.losses import ProxyAnchorLoss
from semproxy.models import build_model
from semproxy.models.class_bank import ClassPromptBank
from semproxy.models.methods import METHODS
from semproxy.models.precision import lower_frozen_weights
from semproxy.optim import Optimizers, build_optimizers

NUM_CLASSES = 6
CUDA = torch.device("cuda", 0)


def fake_cuda_copy(model: torch.nn.Module, mode: FakeTensorMode) -> torch.nn.Module:
    """A fake copy of ``model`` on CUDA, placed as ``model.to('cuda')`` places it: an offloaded
    class-prompt bank stays on the host. By hand: ``Module.to`` cannot swap fake parameters, and the
    bank's own ``_apply`` would pin an offloaded storage, which needs a real CUDA context."""
    with FakeCopyMode(mode):
        fake = copy.deepcopy(model)
    with mode:
        for module in fake.modules():
            for name, param in module._parameters.items():
                if param is not None:
                    module._parameters[name] = torch.nn.Parameter(param.to(CUDA), param.requires_grad)
            if isinstance(module, ClassPromptBank):
                if not module.offload:
                    module.storage = module.storage.to(CUDA)
                module._buffers.update(module._views())
            else:
                for name, buffer in module._buffers.items():
                    if buffer is not None:
                        module._buffers[name] = buffer.to(CUDA)
    return fake


def fake_step(method: str, amp_dtype: Optional[torch.dtype], monkeypatch, optim: Optional[OptimConfig] = None,
              **overrides) -> tuple[torch.nn.Module, Optional[Optimizers]]:
    """The training forward and loss of a fake CUDA model, then (with ``optim``) the optimisers' updates
    of that step, then the evaluation forward; returns the model and its optimisers.

    Autograd's engine needs a CUDA context, so the gradients handed to the optimisers are ones: what
    is checked is where the updates run and put their results, not their values (the CPU tests'
    and the GPU tests' part)."""
    torch.manual_seed(0)
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    model = fake_cuda_copy(build_model(micro_config(method=method, **overrides), NUM_CLASSES).train(), mode)
    labels = torch.tensor([1, 1, 4, 4, 5, 5])
    groups = BatchClasses.from_labels(labels)  # host-built, as the loader builds it (unique has no fake shape)
    optimizers = None
    with mode:
        if optim is not None:
            optimizers = build_optimizers(model, optim, compiled=optim.compile != "off")
        if amp_dtype is not None:
            lower_frozen_weights(model, amp_dtype)
        images, labels, groups = torch.randn(6, 3, 32, 32, device=CUDA), labels.to(CUDA), groups.to(CUDA)
        # autocast("cuda") turns itself off (with a warning) where torch sees no CUDA, and refuses bf16
        # where the driver denies it; told otherwise after making the inputs, which would then try to
        # initialise CUDA.
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
        with autocast_to(CUDA, amp_dtype):
            out = model.train_outputs(images, groups)
        terms = ProxyAnchorLoss()(out.embeddings, labels, out.proxies)
        assert terms.loss.device == CUDA and terms.loss.dtype == torch.float32
        if out.class_rows is not None:
            assert out.class_rows.device == CUDA and out.class_rows.requires_grad
            assert out.row_classes.device == model.semantic.bank.storage_device
        if optimizers is not None:
            monkeypatch.setattr(torch.autograd, "grad",
                                lambda outputs, inputs, **kwargs: tuple(map(torch.ones_like, inputs)))
            optimizers.minimise(terms.loss, out.class_rows, out.row_classes)
            optimizers.end_epoch()
        model.eval()
        with autocast_to(CUDA, amp_dtype):
            embeddings = model(images)
        assert embeddings.device == CUDA and embeddings.shape == (6, model.head.proj.out_features)
    return model, optimizers


@pytest.mark.parametrize("amp_dtype", [None, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_keeps_its_forward_and_loss_on_the_gpu(method, amp_dtype, monkeypatch):
    model, _ = fake_step(method, amp_dtype, monkeypatch)
    assert all(p.device == CUDA for p in model.parameters())


def test_an_offloaded_class_prompt_bank_feeds_a_gpu_forward_from_the_host(monkeypatch):
    model, _ = fake_step("vptsp_gru", torch.float16, monkeypatch, offload_class_prompts=True)  # pre-Ampere amp
    assert model.semantic.bank.storage_device.type == "cpu"


# Not every pair: run eagerly, torch's Adam reads its host step count (and SGD a tensor learning rate)
# with .item(), which a fake tensor cannot answer; compiled, those are traced instead.
@pytest.mark.parametrize(("optimizer", "placement"), [("sgd", "eager"), ("sgd", "offloaded"), ("adamw", "compiled")])
def test_the_optimisers_update_gpu_parameters_and_the_bank_where_it_lives(optimizer, placement, monkeypatch):
    """A compiled step's optimisers keep their step counts and learning rates on the GPU (captured
    with the step); an offloaded bank's rows and state stay on the host."""
    optim = OptimConfig(optimizer=optimizer, grad_clip=1.0, compile="cuda_graphs" if placement == "compiled" else "off")
    model, optimizers = fake_step("vptsp_gru", torch.bfloat16, monkeypatch, optim,
                                  offload_class_prompts=placement == "offloaded")
    assert all(p.device == CUDA for p in optimizers.trained)
    bank = model.semantic.bank.storage_device
    assert bank.type == ("cpu" if placement == "offloaded" else "cuda")
    for state in optimizers.dense.state.values():
        for name, value in state.items():
            expected = "cpu" if name == "step" and placement != "compiled" else "cuda"
            assert value.device.type == expected, (name, value.device)
    assert {v.device for s in optimizers.bank.state.values() for v in s.values()} == {bank}
    assert (optimizers.lrs is not None and optimizers.lrs.device == CUDA) == (placement == "compiled")


def test_a_weight_left_on_the_host_is_caught():
    """The check itself: a forward that mixes a host tensor into GPU work fails here as on a GPU."""
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    model = fake_cuda_copy(build_model(micro_config(method="vpt"), NUM_CLASSES), mode)
    model.head.proj.weight = torch.nn.Parameter(torch.zeros_like(model.head.proj.weight, device="cpu"))
    with mode, pytest.raises(RuntimeError, match="cuda:0 and cpu"):
        model(torch.randn(2, 3, 32, 32, device=CUDA))
