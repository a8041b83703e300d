"""Config validation: unknown keys with suggestions, types, ranges, and --set overrides."""
from __future__ import annotations

import pytest

from semproxy.config import ConfigError, LossConfig, ModelConfig, apply_overrides, from_dict


def test_defaults_are_the_paper_cub_vit_s_setting():
    cfg = ModelConfig()
    assert (cfg.method, cfg.bitfit, cfg.num_prompts, cfg.prompt_depth, cfg.prompt_step) == ("vptsp_gru", True, 10, 12, 0)
    assert (cfg.class_prompts, cfg.class_prompt_depth, cfg.proxy_bias_ratio) == (3, 12, 0.5)
    assert (LossConfig().pa_alpha, LossConfig().pa_delta) == (32.0, 0.1)


def test_unknown_key_suggests_the_closest_name():
    with pytest.raises(ConfigError, match=r"f.yaml: unknown key 'proxy_bias_ration' \(did you mean 'proxy_bias_ratio'\?\)"):
        from_dict(ModelConfig, {"proxy_bias_ration": 0.3}, where="f.yaml")


@pytest.mark.parametrize("key,value,message", [
    ("num_prompts", "ten", "must be int"),
    ("num_prompts", 2.5, "must be int"),
    ("bitfit", 1, "must be bool"),
    ("method", "lora", "must be one of 'full'"),
    ("proxy_bias_ratio", 1.5, r"must be in \[0.0, 1.0\]"),
    ("prompt_step", -1, r"must be in \[0, inf\]"),
    ("adapter_scale", float("nan"), "must be float"),
    ("img_size", 4, r"must be in \[8, inf\]"),
])
def test_bad_values_name_the_key(key, value, message):
    with pytest.raises(ConfigError, match=f"key '{key}' {message}"):
        from_dict(ModelConfig, {key: value})


def test_int_is_accepted_for_float_and_optional_none():
    cfg = from_dict(ModelConfig, {"adapter_scale": 1, "img_size": None, "weights": None})
    assert cfg.adapter_scale == 1.0 and isinstance(cfg.adapter_scale, float)


def test_overrides_parse_like_yaml_and_validate():
    cfg = apply_overrides(ModelConfig(), ["num_prompts=80", "proxy_bias_ratio=0.7", "bitfit=false",
                                          "proxy_prompts=class+sample", "weights=null", "adapter_scale=1e-1"])
    assert (cfg.num_prompts, cfg.proxy_bias_ratio, cfg.bitfit, cfg.proxy_prompts) == (80, 0.7, False, "class+sample")
    assert cfg.adapter_scale == 0.1 and cfg.weights is None
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides(ModelConfig(), ["num_prompts"])
    with pytest.raises(ConfigError, match="--set: key 'num_prompts' must be int"):
        apply_overrides(ModelConfig(), ["num_prompts=many"])
