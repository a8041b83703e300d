"""Parameter accounting on ViT-S/16 (random weights), against counts worked out by hand."""
from __future__ import annotations

import dataclasses

import pytest

from semproxy.config import ModelConfig
from semproxy.models import build_model, count_parameters
from semproxy.cli.params import main

D, E, C, LAYERS = 384, 384, 100, 12
HEAD = 2 * D + D * E + E                 # LayerNorm(D) + Linear(D, E) = 148,608
PROXIES = C * E                          # 38,400
# Per block: qkv 3D + proj D + fc1 4D + fc2 D + norm1 D + norm2 D; plus patch-embed and final norm.
BIASES = LAYERS * (3 * D + D + 4 * D + D + D + D) + D + D   # 51,456
PROMPTS = 12 * 10 * D                    # VPT L12 N10: 46,080
ADAPTER = (D * 256 + 256) + (256 * D + D)  # down + up, no LayerNorm: 197,248

EXPECTED = {
    ("linear", False): HEAD + PROXIES,                       # 187,008 (paper Table 1: 0.19M)
    ("bitfit", False): HEAD + PROXIES + BIASES,              # 238,464
    ("vpt", False): HEAD + PROXIES + PROMPTS,                # 233,088 (paper: 0.23M)
    ("vpt", True): HEAD + PROXIES + PROMPTS + BIASES,        # 284,544
    ("adapter", False): HEAD + PROXIES + 7 * ADAPTER,        # 1,567,744 (paper: 1.57M)
}


@pytest.fixture(scope="module")
def vit_s_config() -> ModelConfig:
    return ModelConfig(backbone="vit_small_patch16_224", pretrained=False, num_prompts=10, prompt_depth=12,
                       prompt_step=0, adapter_layers=7, adapter_dim=256, adapter_norm="none")


@pytest.mark.parametrize("method,bitfit", list(EXPECTED))
def test_vit_small_counts_match_hand_computation(vit_s_config, method, bitfit):
    model = build_model(dataclasses.replace(vit_s_config, method=method, bitfit=bitfit), C)
    count = count_parameters(model, classes_per_batch=32)
    assert count.backbone == 21_665_664
    assert count.learned == count.per_step == EXPECTED[(method, bitfit)]
    assert count.learned_percent == pytest.approx(100 * EXPECTED[(method, bitfit)] / 21_665_664)


def test_semantic_class_prompts_count_per_step_only_for_batch_classes(vit_s_config):
    model = build_model(dataclasses.replace(vit_s_config, method="vptsp_ema", bitfit=False,
                                            class_prompts=3, class_prompt_depth=12), C)
    count = count_parameters(model, classes_per_batch=32)
    class_prompts_per_class = 12 * 3 * D
    dense = HEAD + PROXIES + PROMPTS + HEAD   # + the proxy head; EMA has no parameters
    assert count.learned == dense + C * class_prompts_per_class
    assert count.per_step == dense + 32 * class_prompts_per_class


def test_cli_prints_the_table(capsys):
    assert main(["--methods", "linear,vpt", "--set", "backbone=vit_small_patch16_224", "--set", "bitfit=false"]) == 0
    out = capsys.readouterr().out
    assert "187,008" in out and "233,088" in out and "21,665,664" in out


def test_cli_rejects_bad_input_in_one_line(capsys):
    assert main(["--set", "num_promts=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --set: unknown key 'num_promts' (did you mean 'num_prompts'?)"
    assert main(["--methods", "lora"]) == 2
    assert "unknown method 'lora'" in capsys.readouterr().err
