"""Every method's forward and Proxy-Anchor loss on CUDA tensors, checked on a machine without a GPU.

CI never has a GPU, so a tensor that a forward makes on the host (a device mismatch only a GPU run
would raise) would go unseen until one ran. torch's ``FakeTensorMode`` gives tensors a device, dtype
and shape but no storage: here the model's parameters and the batch are "cuda" tensors, the forward
runs under CUDA autocast with the frozen weights lowered as a GPU run lowers them, and torch raises
on any operation that mixes devices or dtypes. Autograd's engine needs a real CUDA context, so the
backward and the optimisers are the GPU tests' (``pytest -m gpu``).
"""
from __future__ import annotations

import copy
from typing import Optional

import pytest
import torch
from torch._subclasses.fake_tensor import FakeCopyMode, FakeTensorMode

from conftest import micro_config
from semproxy.data import BatchClasses
from semproxy.evaluation import autocast_to
from semproxy.losses import ProxyAnchorLoss
from semproxy.models import build_model
from semproxy.models.class_bank import ClassPromptBank
from semproxy.models.methods import METHODS
from semproxy.models.precision import lower_frozen_weights

NUM_CLASSES = 6
CUDA = torch.device("cuda", 0)


def fake_cuda_copy(model: torch.nn.Module, mode: FakeTensorMode) -> torch.nn.Module:
    """A fake copy of ``model`` on CUDA, placed as ``model.to('cuda')`` places it: an offloaded
    class-prompt bank stays on the host. (``Module.to`` cannot swap fake parameters, hence by hand.)"""
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


def run_forward(method: str, amp_dtype: Optional[torch.dtype], monkeypatch, **overrides) -> torch.nn.Module:
    """The training forward and loss, then the evaluation forward, of a fake CUDA model; returns it."""
    torch.manual_seed(0)
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    model = fake_cuda_copy(build_model(micro_config(method=method, **overrides), NUM_CLASSES).train(), mode)
    labels = torch.tensor([1, 1, 4, 4, 5, 5])
    groups = BatchClasses.from_labels(labels)  # host-built, as the loader builds it (unique has no fake shape)
    with mode:
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
        model.eval()
        with autocast_to(CUDA, amp_dtype):
            embeddings = model(images)
        assert embeddings.device == CUDA and embeddings.shape == (6, model.head.proj.out_features)
    return model


@pytest.mark.parametrize("amp_dtype", [None, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_keeps_its_forward_and_loss_on_the_gpu(method, amp_dtype, monkeypatch):
    model = run_forward(method, amp_dtype, monkeypatch)
    assert all(p.device == CUDA for p in model.parameters())


def test_an_offloaded_class_prompt_bank_feeds_a_gpu_forward_from_the_host(monkeypatch):
    model = run_forward("vptsp_gru", torch.float16, monkeypatch, offload_class_prompts=True)  # pre-Ampere amp
    assert model.semantic.bank.storage_device.type == "cpu"


def test_a_weight_left_on_the_host_is_caught():
    """The check itself: a forward that mixes a host tensor into GPU work fails here as on a GPU."""
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    model = fake_cuda_copy(build_model(micro_config(method="vpt"), NUM_CLASSES), mode)
    model.head.proj.weight = torch.nn.Parameter(torch.zeros_like(model.head.proj.weight, device="cpu"))
    with mode, pytest.raises(RuntimeError, match="cuda:0 and cpu"):
        model(torch.randn(2, 3, 32, 32, device=CUDA))
