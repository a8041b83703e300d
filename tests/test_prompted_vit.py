"""The prompted ViT: exact equality with timm, prompt counts, and what each method trains."""
from __future__ import annotations

import pytest
import torch

from conftest import NUM_CLASSES, micro_config
from semproxy.config import ConfigError
from semproxy.models import METHODS, build_model, prompt_counts


def _model(**overrides):
    torch.manual_seed(0)
    return build_model(micro_config(**overrides), NUM_CLASSES)


@pytest.mark.parametrize("method", ["linear", "bitfit", "vpt", "vptsp_gru"])
def test_zero_prompts_equal_timm_forward_features_exactly(batch, method):
    model = _model(method=method, num_prompts=0, class_prompts=0).eval()
    images, _ = batch
    expected = model.backbone.forward_features(images)[:, 0]
    assert torch.equal(model.encode(images, model.sample_prompts(len(images))), expected)


def test_prompts_change_the_features(batch):
    model = _model(method="vpt").eval()
    images, _ = batch
    plain = model.backbone.forward_features(images)[:, 0]
    prompted = model.encode(images, model.sample_prompts(len(images)))
    assert prompted.shape == plain.shape
    assert not torch.allclose(prompted, plain, atol=1e-4)


def test_lora_adapters_start_as_identity(batch):
    model = _model(method="adapter", adapter_init="lora").eval()
    images, _ = batch
    assert torch.allclose(model.encode(images, model.sample_prompts(len(images))),
                          model.backbone.forward_features(images)[:, 0], atol=1e-6)


@pytest.mark.parametrize("num,depth,step,layers,expected", [
    (10, 12, 0, 12, [10] * 12),
    (80, 11, 2, 12, [80, 78, 76, 74, 72, 70, 68, 66, 64, 62, 60, 0]),
    (5, 12, 2, 12, [5, 3, 1] + [0] * 9),
    (3, 2, 0, 4, [3, 3, 0, 0]),
    (0, 4, 1, 4, [0, 0, 0, 0]),
])
def test_prompt_counts_follow_the_formula(num, depth, step, layers, expected):
    assert prompt_counts(num, depth, step, layers) == expected


def test_model_prompt_shapes_follow_counts():
    model = _model(method="vptsp_gru", num_prompts=4, prompt_depth=4, prompt_step=1,
                   class_prompts=5, class_prompt_depth=3, class_prompt_step=2)
    assert [model.prompts.prompts[str(i)].shape for i in range(4)] == [(4 - i, 64) for i in range(4)]
    tables = {name: t.shape for name, t in model.semantic.bank.named_buffers()}
    assert tables == {"table_0": (NUM_CLASSES, 5, 64), "table_1": (NUM_CLASSES, 3, 64),
                      "table_2": (NUM_CLASSES, 1, 64)}


def test_depth_beyond_the_backbone_is_a_config_error():
    with pytest.raises(ConfigError, match="'prompt_depth' is 13 but backbone 'vit_micro_patch8_32' has 12 blocks"):
        _model(method="vpt", prompt_depth=13)
    with pytest.raises(ConfigError, match="adapter_layers"):
        _model(method="adapter", adapter_layers=13)
    with pytest.raises(ConfigError, match=r"^runs/x.yaml: key 'class_prompt_depth' is 13"):
        build_model(micro_config(method="vptsp_gru", class_prompt_depth=13), NUM_CLASSES, where="runs/x.yaml")


def test_an_image_smaller_than_a_patch_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^x.yaml: key 'img_size' is 7 but backbone 'vit_micro_patch8_32' has 8-pixel "):
        build_model(micro_config(img_size=7), NUM_CLASSES, where="x.yaml")
    assert build_model(micro_config(img_size=8), NUM_CLASSES)(torch.randn(1, 3, 8, 8)).shape == (1, 32)


# ---- trainability -------------------------------------------------------------------------------
def _expected_trainable(name: str, method: str, bitfit: bool) -> bool:
    spec = METHODS[method]
    if name.startswith("backbone."):
        return spec.train_backbone or (name.endswith("bias") and spec.trains_biases(bitfit))
    if name.startswith("prompts."):
        return spec.prompts
    if name.startswith("adapters."):
        return spec.adapters
    return True  # head, proxy bias, semantic head and accumulator exist only where they train


CASES = [(m, False) for m in METHODS] + [(m, True) for m in ("adapter", "vpt", "vptsp_ema", "vptsp_gru")]


@pytest.mark.parametrize("method,bitfit", CASES)
def test_exactly_the_intended_parameters_get_gradients(batch, method, bitfit):
    # bert init and a linear probe of the outputs: every trainable parameter gets a non-zero gradient
    # (lora's zero up-projection and unit-norm outputs would hide some).
    model = _model(method=method, bitfit=bitfit, adapter_init="bert", adapter_dropout=0.0).train()
    images, labels = batch
    out = model.forward_train(images, labels)
    probe = torch.randn(out.embeddings.shape[1], generator=torch.Generator().manual_seed(3))
    loss = (out.embeddings @ probe).sum() + (out.proxies @ probe).sum()
    loss.backward()
    for name, param in model.named_parameters():
        if _expected_trainable(name, method, bitfit):
            assert param.requires_grad, name
            assert param.grad is not None and param.grad.abs().sum() > 0, f"{name} got no gradient"
        else:
            assert not param.requires_grad and param.grad is None, f"frozen {name} got a gradient"
    if model.semantic is not None:
        rows = model.semantic.bank.active_rows
        assert len(rows) == 3 and all(r.shape[0] == 4 and r.grad.abs().sum() > 0 for r in rows)
        # fused proxies of absent classes (1, 3) depend on their bias only
        assert model.semantic.bank.tables()[0].grad is None


@pytest.mark.parametrize("method", list(METHODS))
def test_frozen_backbone_stays_in_eval_mode(method):
    model = _model(method=method).train()
    assert model.training
    assert model.backbone.training == (method == "full")
    assert all(m.training for m in model.adapters.modules())
    model.eval()
    assert not any(m.training for m in model.modules())


def test_encoder_and_proxy_parameter_groups_partition_the_trainables():
    model = _model(method="vptsp_gru", bitfit=True)
    encoder, proxies = model.encoder_parameters(), model.proxy_parameters()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(encoder) + len(proxies) == len(trainable)
    assert {id(p) for p in encoder}.isdisjoint({id(p) for p in proxies})


def test_evaluation_runs_the_sample_branch_only(batch):
    model = _model(method="vptsp_gru").eval()
    images, labels = batch
    with torch.no_grad():
        plain = model(images)
        state = model.semantic.state.clone()
        out = model.forward_train(images, labels)  # in eval mode: states must not move
    torch.testing.assert_close(out.embeddings, plain)
    assert torch.equal(model.semantic.state, state)
    torch.testing.assert_close(plain.norm(dim=1), torch.ones(len(images)))


def test_shared_patch_tokens_give_what_two_separate_passes_give(batch):
    """forward_train embeds the patches once for both passes: values and gradients as if it did twice."""
    images, labels = batch[0].double(), batch[1]  # float64: summation order cannot hide a difference
    model = _model(method="vptsp_gru", bitfit=True).double().train()
    shared = model.forward_train(images, labels)
    (shared.embeddings.sum() + shared.semantic.sum()).backward()
    grad_shared = model.backbone.patch_embed.proj.bias.grad.clone()
    model.zero_grad()

    classes, inverse = torch.unique(labels, return_inverse=True)
    rows = model.semantic.bank.gather(classes, images.device)
    embeddings = model.head(model.encode(images, model.sample_prompts(len(images))))
    semantic = model.semantic.head(model.encode(images, [None if r is None else r[inverse] for r in rows]))
    (embeddings.sum() + semantic.sum()).backward()
    torch.testing.assert_close(shared.embeddings, embeddings, rtol=0, atol=0)
    torch.testing.assert_close(shared.semantic, semantic, rtol=0, atol=0)
    torch.testing.assert_close(grad_shared, model.backbone.patch_embed.proj.bias.grad, rtol=1e-10, atol=1e-12)
