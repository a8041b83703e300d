"""The contract every registered fine-tuning method keeps, checked for each name in METHODS.

A method is picked up here by its registration alone. What it is meant to do is written out by hand
below, per method (TRAINED, BACKBONE_IN_TRAIN_MODE, COUNTS), never derived from the code under test:
a new method fails these tests until its expectations are written.

1. With zero-initialised additions (no prompts; adapters and LoRA start with a zero up/B projection)
   the pooled features equal timm's own ``forward_features`` + pooling on a clean copy of the backbone.
2. One backward gives non-zero gradients exactly on the parameters the method trains, nowhere else;
   the encoder and proxy groups partition them.
3. The trained state survives a checkpoint (save, load into a fresh model: identical outputs).
4. Parameter counts on ViT-S/16 equal counts worked out by hand.
"""
from __future__ import annotations

import dataclasses
import io
import re

import pytest
import timm
import torch

from conftest import NUM_CLASSES, micro_config
from semproxy.checkpoint import restore_trained, trained_state
from semproxy.config import ConfigError, ModelConfig
from semproxy.models import METHODS, build_model, count_parameters, get_method, register_method
from semproxy.models.backbone import MICRO_SYNTHETIC_WEIGHTS

# ---- expectations, by hand -------------------------------------------------------------------------
# Trained parameters (full-match patterns) in conftest's micro config (12 blocks; adapter_layers 2;
# prompts 3, 2, 1 in blocks 0-2; lora_layers at its default, every block) besides these, always trained:
ALWAYS = [r"head\.(norm|proj)\.(weight|bias)", r"proxy_bias"]
BIASES = r"backbone\..*bias"
SAMPLE_PROMPTS = r"prompts\.prompts\.[012]"
PROXY_HEAD = r"semantic\.head\.(norm|proj)\.(weight|bias)"
TRAINED = {
    "full": [r"backbone\..*"],
    "linear": [],
    "bitfit": [BIASES],
    "adapter": [r"adapters\.1[01]\.(norm|down|up)\.(weight|bias)"],
    "vpt": [SAMPLE_PROMPTS],
    "vptsp_ema": [SAMPLE_PROMPTS, PROXY_HEAD],  # EMA has no parameters
    "vptsp_gru": [SAMPLE_PROMPTS, PROXY_HEAD,
                  r"semantic\.accumulator\.(input_proj\.(weight|bias)|hidden_proj\.weight)"],
    "lora": [r"lora\.([0-9]|1[01])\.[qv]\.[ab]"],
}
BITFIT_OPTIONAL = {"adapter", "vpt", "vptsp_ema", "vptsp_gru", "lora"}  # + BIASES with bitfit: true
BACKBONE_IN_TRAIN_MODE = {"full"}

# ViT-S/16 (D = E = 384, 12 blocks, 100 classes), counted by hand.
D, E, C, LAYERS = 384, 384, 100, 12
VIT_S = 21_665_664                       # every backbone parameter
HEAD = 2 * D + D * E + E                 # LayerNorm(D) + Linear(D, E) = 148,608
PROXIES = C * E                          # 38,400
# Per block: qkv 3D + proj D + fc1 4D + fc2 D + norm1 D + norm2 D; plus patch-embed and final norm.
BIASES_COUNT = LAYERS * (3 * D + D + 4 * D + D + D + D) + D + D   # 51,456
PROMPTS = 12 * 10 * D                    # VPT L12 N10: 46,080
ADAPTER = (D * 256 + 256) + (256 * D + D)  # down + up, no LayerNorm: 197,248
CLASS_PROMPTS = 12 * 3 * D               # per class: CLS-L 12 x CLS-N 3 = 13,824
GRU = (E * 3 * E + 3 * E) + E * 3 * E    # input (with the gate biases) + hidden projections: 885,888
LORA = 12 * 2 * (8 * D + D * 8)          # 12 blocks x (q, v) x (A + B) at rank 8: 147,456
CLASSES_PER_BATCH = 32
COUNTS = {  # (learned, per step) with bitfit: false
    "full": (HEAD + PROXIES + VIT_S,) * 2,
    "linear": (HEAD + PROXIES,) * 2,                          # 187,008 (paper Table 1: 0.19M)
    "bitfit": (HEAD + PROXIES + BIASES_COUNT,) * 2,           # 238,464
    "adapter": (HEAD + PROXIES + 7 * ADAPTER,) * 2,           # 1,567,744 (paper: 1.57M)
    "vpt": (HEAD + PROXIES + PROMPTS,) * 2,                   # 233,088 (paper: 0.23M)
    "vptsp_ema": (HEAD + PROXIES + PROMPTS + HEAD + C * CLASS_PROMPTS,
                  HEAD + PROXIES + PROMPTS + HEAD + CLASSES_PER_BATCH * CLASS_PROMPTS),
    "vptsp_gru": (HEAD + PROXIES + PROMPTS + HEAD + GRU + C * CLASS_PROMPTS,
                  HEAD + PROXIES + PROMPTS + HEAD + GRU + CLASSES_PER_BATCH * CLASS_PROMPTS),
    "lora": (HEAD + PROXIES + LORA,) * 2,                     # 334,464
}
VIT_S_CONFIG = ModelConfig(backbone="vit_small_patch16_224", pretrained=False, num_prompts=10, prompt_depth=12,
                           prompt_step=0, adapter_layers=7, adapter_dim=256, adapter_norm="none", class_prompts=3,
                           class_prompt_depth=12, lora_layers=12, lora_rank=8)

CASES = [(m, False) for m in METHODS] + [(m, True) for m in METHODS if m in BITFIT_OPTIONAL]


# ---- helpers ---------------------------------------------------------------------------------------
def _model(method: str, seed: int = 0, **overrides) -> torch.nn.Module:
    assert method in TRAINED and method in COUNTS, f"write the expectations of method '{method}' in {__file__}"
    torch.manual_seed(seed)
    return build_model(micro_config(method=method, **overrides), NUM_CLASSES)


def clean_timm(model) -> torch.nn.Module:
    """timm's own ViT with the model's backbone weights, and none of the method's hooks."""
    plain = timm.create_model(model.cfg.backbone, pretrained=False, num_classes=0)
    plain.load_state_dict(model.backbone.state_dict())
    return plain.eval()


def _perturb(tensors) -> None:
    """Move every tensor off its initial value (zero up-projections would hide gradients and outputs)."""
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for tensor in tensors:
            tensor.add_(0.05 * torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype))


def _expected_trained(method: str, bitfit: bool) -> re.Pattern:
    patterns = ALWAYS + TRAINED[method] + ([BIASES] if bitfit and method in BITFIT_OPTIONAL else [])
    return re.compile("|".join(f"({p})" for p in patterns))


# ---- 1. zero-initialised additions are exactly timm ------------------------------------------------
@pytest.mark.parametrize("method", list(METHODS))
def test_zero_initialised_additions_give_timms_features_exactly(batch, method):
    model = _model(method, num_prompts=0, class_prompts=0).eval()
    images, _ = batch
    plain = clean_timm(model)
    with torch.no_grad():
        expected = plain.forward_head(plain.forward_features(images), pre_logits=True)
        assert torch.equal(model.encode(images, model.sample_prompts(len(images))), expected)


# ---- 2. gradients exactly where the method trains --------------------------------------------------
@pytest.mark.parametrize("method,bitfit", CASES)
def test_gradients_reach_exactly_the_parameters_the_method_trains(batch, method, bitfit):
    model = _model(method, bitfit=bitfit).train()
    _perturb(p for name, p in model.named_parameters() if not name.startswith("backbone."))
    images, labels = batch
    out = model.forward_train(images, labels)
    probe = torch.randn(out.embeddings.shape[1], generator=torch.Generator().manual_seed(3))
    ((out.embeddings @ probe).sum() + (out.proxies @ probe).sum()).backward()
    expected = _expected_trained(method, bitfit)
    names = [name for name, _ in model.named_parameters()]
    for pattern in ALWAYS + TRAINED[method]:  # no expectation matches nothing (a typo would pass vacuously)
        assert any(re.fullmatch(pattern, n) for n in names), f"no parameter of {method} matches {pattern}"
    for name, param in model.named_parameters():
        if expected.fullmatch(name):
            assert param.requires_grad and param.grad is not None and param.grad.abs().sum() > 0, f"{name}: no gradient"
        else:
            assert not param.requires_grad and param.grad is None, f"{name} is frozen but trains"


@pytest.mark.parametrize("method", list(METHODS))
def test_parameter_groups_partition_what_trains(method):
    model = _model(method, bitfit=True)
    encoder, proxies = model.encoder_parameters(), model.proxy_parameters()
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for p in encoder}.isdisjoint({id(p) for p in proxies})
    assert {id(p) for p in encoder} | {id(p) for p in proxies} == trainable
    assert any(p is model.proxy_bias for p in proxies)


@pytest.mark.parametrize("method", list(METHODS))
def test_a_frozen_backbone_stays_in_eval_mode(method):
    model = _model(method).train()
    assert model.backbone.training == (method in BACKBONE_IN_TRAIN_MODE)
    assert all(m.training for name, m in model.named_modules() if not name.startswith("backbone"))
    model.eval()
    assert not any(m.training for m in model.modules())


# ---- 3. checkpoints ----------------------------------------------------------------------------------
@pytest.mark.parametrize("method", list(METHODS))
def test_the_trained_state_round_trips_through_a_checkpoint(batch, method):
    weights = dict(weights=str(MICRO_SYNTHETIC_WEIGHTS), bitfit=True)  # the same frozen backbone in both models
    model = _model(method, seed=0, **weights).eval()
    _perturb(trained_state(model).values())
    buffer = io.BytesIO()
    torch.save(trained_state(model), buffer)
    fresh = _model(method, seed=1, **weights).eval()
    images, _ = batch
    with torch.no_grad():
        assert not torch.equal(fresh(images), model(images))
        buffer.seek(0)
        restore_trained(fresh, {"trained": torch.load(buffer, weights_only=True)}, where="test")
        assert torch.equal(fresh(images), model(images))
        assert torch.equal(fresh.current_proxies(), model.current_proxies())


# ---- 4. parameter counts on ViT-S/16 -------------------------------------------------------------------
@pytest.mark.parametrize("method,bitfit", CASES)
def test_vit_small_counts_match_hand_counts(method, bitfit):
    assert method in COUNTS, f"write the ViT-S/16 count of method '{method}' in {__file__}"
    model = build_model(dataclasses.replace(VIT_S_CONFIG, method=method, bitfit=bitfit), C)
    count = count_parameters(model, classes_per_batch=CLASSES_PER_BATCH)
    extra = BIASES_COUNT if bitfit else 0
    assert count.backbone == VIT_S
    assert (count.learned, count.per_step) == (COUNTS[method][0] + extra, COUNTS[method][1] + extra)
    assert count.learned_percent == pytest.approx(100 * (COUNTS[method][0] + extra) / VIT_S)


# ---- the registry --------------------------------------------------------------------------------------
def test_a_name_registers_once_and_an_unknown_one_is_a_config_error():
    with pytest.raises(ValueError, match="method 'vpt' is registered twice"):
        register_method("vpt")(type("Again", (get_method("linear"),), {}))
    with pytest.raises(ConfigError, match="unknown method 'prefix' \\(expected one of full, linear"):
        get_method("prefix")
