"""The prompted ViT: prompts, the adapters' and LoRA's hooks against their formulas, the semantic
proxy pass, and timm's private API as semproxy uses it (semproxy/models/timm_compat.py).

What every method keeps (equality with timm, where gradients go, checkpoints, counts): test_methods.py.
"""
from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from conftest import NUM_CLASSES, micro_config
from semproxy.config import ConfigError
from semproxy.errors import BackboneError
from semproxy.models import build_model, create_backbone, prompt_counts
from semproxy.models import timm_compat
from test_methods import clean_timm


def _model(**overrides):
    torch.manual_seed(0)
    return build_model(micro_config(**overrides), NUM_CLASSES)


def test_prompts_change_the_features(batch):
    model = _model(method="vpt").eval()
    images, _ = batch
    plain = model.backbone.forward_features(images)[:, 0]
    prompted = model.encode(images, model.sample_prompts(len(images)))
    assert prompted.shape == plain.shape
    assert not torch.allclose(prompted, plain, atol=1e-4)


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
    with pytest.raises(ConfigError, match="'lora_layers' is 13 but backbone 'vit_micro_patch8_32' has 12 blocks"):
        _model(method="lora", lora_layers=13)
    with pytest.raises(ConfigError, match=r"^runs/x.yaml: key 'class_prompt_depth' is 13"):
        build_model(micro_config(method="vptsp_gru", class_prompt_depth=13), NUM_CLASSES, where="runs/x.yaml")


def test_an_image_smaller_than_a_patch_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^x.yaml: key 'img_size' is 7 but backbone 'vit_micro_patch8_32' has 8-pixel "):
        build_model(micro_config(img_size=7), NUM_CLASSES, where="x.yaml")
    assert build_model(micro_config(img_size=8), NUM_CLASSES)(torch.randn(1, 3, 8, 8)).shape == (1, 32)


# ---- the methods' hooks against their formulas ---------------------------------------------------
@pytest.mark.parametrize("position", ["parallel", "sequential"])
def test_adapter_hooks_give_adaptformer_around_timms_own_block(position):
    """x1 = x + attn branch; out = x1 + mlp_branch(x1) + adapter(x1 | mlp_branch(x1)), the mask reaching attention."""
    model = _model(method="adapter", adapter_position=position, adapter_init="bert", adapter_dropout=0.0).eval()
    block, adapter, plain = model.backbone.blocks[11], model.adapters["11"], clean_timm(model).blocks[11]
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 64, generator=generator)
    mask = (torch.rand(5, 5, generator=generator) > 0.5) | torch.eye(5, dtype=torch.bool)  # True: may attend
    with torch.no_grad():
        x1 = x + plain.drop_path1(plain.ls1(plain.attn(plain.norm1(x), attn_mask=mask)))
        h = plain.drop_path2(plain.ls2(plain.mlp(plain.norm2(x1))))
        expected = x1 + h + adapter(x1 if position == "parallel" else h)
        assert torch.equal(block(x, attn_mask=mask), expected)
        assert not torch.allclose(block(x), expected)  # the mask took effect
        assert not torch.allclose(plain(x, attn_mask=mask), expected)  # and so did the adapter


def test_lora_equals_its_update_merged_into_q_and_v():
    """qkv(x) + [B_q A_q x, 0, B_v A_v x] * alpha / rank == timm's block with W_q, W_v += B A * alpha / rank."""
    model = _model(method="lora", lora_layers=3, lora_rank=4, lora_alpha=8.0).eval()
    merged = clean_timm(model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for index, lora in model.lora.items():
            lora.q.b.normal_(generator=generator)
            lora.v.b.normal_(generator=generator)
            weight = merged.blocks[int(index)].attn.qkv.weight
            weight[:64] += 2.0 * lora.q.b @ lora.q.a
            weight[128:] += 2.0 * lora.v.b @ lora.v.a
        images = torch.randn(2, 3, 32, 32, generator=generator)
        expected = merged.forward_head(merged.forward_features(images), pre_logits=True)
        torch.testing.assert_close(model.encode(images, model.sample_prompts(2)), expected, rtol=1e-5, atol=1e-5)
    assert sorted(model.lora) == ["10", "11", "9"]


@pytest.mark.parametrize("method", ["vptsp_ema", "vptsp_gru"])
def test_class_prompt_rows_of_the_batchs_classes_get_gradients(batch, method):
    model = _model(method=method).train()
    out = model.forward_train(*batch)
    probe = torch.randn(out.proxies.shape[1], generator=torch.Generator().manual_seed(3))
    (out.proxies @ probe).sum().backward()
    rows = model.semantic.bank.layers(out.class_rows)  # one leaf, every layer's rows side by side
    assert out.class_rows.is_leaf and out.class_rows.shape == (4, 3 * 2, 64)  # CLS-L 3 x CLS-N 2
    assert [r.shape for r in rows[:3]] == [(4, 2, 64)] * 3 and rows[3:] == [None] * 9
    assert all(r.abs().sum() > 0 for r in model.semantic.bank.layers(out.class_rows.grad)[:3])
    # fused proxies of absent classes (1, 3) depend on their bias only; the tables get no dense gradient
    assert all(table.grad is None for table in model.semantic.bank.tables())


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


def test_the_passes_run_as_one_batch_and_give_what_two_separate_passes_give(batch):
    """forward_train runs the sample and proxy passes as one batch (the proxy pass's prompts padded and
    masked): values and gradients as if it ran them one after the other.

    float64, so that summation order cannot hide a difference: attention over a batch twice as large,
    with a mask (zero, or -inf on the padding, which gets exactly zero weight), rounds its reductions
    apart in the last bits (measured: 4.4e-16 absolute, 3e-12 relative on a near-zero value).
    """
    images, labels = batch[0].double(), batch[1]
    model = _model(method="vptsp_gru", bitfit=True).double().train()
    shared = model.forward_train(images, labels)
    (shared.embeddings.sum() + shared.semantic.sum()).backward()
    grads_shared = [model.backbone.patch_embed.proj.bias.grad.clone(), model.prompts.prompts["0"].grad.clone(),
                    shared.class_rows.grad]
    model.zero_grad()

    classes, inverse = torch.unique(labels, return_inverse=True)
    rows = model.semantic.bank.gather(classes, images.device)
    embeddings = model.head(model.encode(images, model.sample_prompts(len(images))))
    per_image = [None if r is None else r[inverse] for r in model.semantic.bank.layers(rows)]
    semantic = model.semantic.head(model.encode(images, per_image))
    (embeddings.sum() + semantic.sum()).backward()
    torch.testing.assert_close(shared.embeddings, embeddings, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(shared.semantic, semantic, rtol=1e-10, atol=1e-12)
    grads = [model.backbone.patch_embed.proj.bias.grad, model.prompts.prompts["0"].grad, rows.grad]
    for ours, theirs in zip(grads_shared, grads):
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)


def test_timm_is_the_release_the_accessors_were_written_for():
    assert timm.__version__.startswith(timm_compat.SUPPORTED_TIMM), (
        f"timm {timm.__version__}: check every accessor of semproxy/models/timm_compat.py, then SUPPORTED_TIMM")


def test_embed_tokens_are_what_forward_features_feeds_the_blocks(batch):
    backbone = create_backbone("vit_micro_patch8_32").eval()
    images, _ = batch
    with torch.no_grad():
        tokens = timm_compat.embed_tokens(backbone, images)
        assert tokens.shape == (8, 1 + 16, 64)
        assert torch.equal(backbone.norm(backbone.blocks(tokens)), backbone.forward_features(images))


def test_timms_vit_factory_and_pretrained_config_build_a_registered_vit():
    cfg = timm_compat.vit_pretrained_cfg(input_size=(3, 32, 32), num_classes=0)
    assert cfg["input_size"] == (3, 32, 32) and cfg["num_classes"] == 0
    model = timm_compat.create_vision_transformer("vit_micro_patch8_32", pretrained=False, img_size=32, patch_size=8,
                                                  embed_dim=64, depth=2, num_heads=2, num_classes=0)
    assert len(model.blocks) == 2 and model.embed_dim == 64


def test_the_block_parts_the_methods_hook_exist_and_a_missing_one_is_named():
    block = create_backbone("vit_micro_patch8_32").blocks[0]
    assert isinstance(timm_compat.submodule(block, "attn.qkv", "lora"), nn.Linear)
    assert timm_compat.submodule(block, "norm2", "adapter") is block.norm2
    assert timm_compat.submodule(block, "drop_path2", "adapter") is block.drop_path2
    with pytest.raises(BackboneError, match="^lora needs 'attn.qkv' in every block, which the backbone's Linear "):
        timm_compat.submodule(nn.Linear(2, 2), "attn.qkv", "lora")
