"""The typed config: YAML round trip, unknown keys with suggestions, types, ranges, overrides."""
from __future__ import annotations

import pytest

from semproxy.config import Config, ConfigError


def test_defaults_are_the_paper_cub_vit_s_setting():
    cfg = Config()
    m, o, d = cfg.model, cfg.optim, cfg.data
    assert (m.method, m.bitfit, m.num_prompts, m.prompt_depth, m.prompt_step) == ("vptsp_gru", True, 10, 12, 0)
    assert (m.class_prompts, m.class_prompt_depth, m.proxy_bias_ratio) == (3, 12, 0.5)
    assert (o.optimizer, o.lr, o.lr_proxy, o.weight_decay, o.epochs) == ("sgd", 5e-3, 0.1, 1e-6, 15)
    assert (d.batch_size, d.samples_per_class) == (64, 2)
    assert (cfg.loss.pa_alpha, cfg.loss.pa_delta) == (32.0, 0.1)


def test_field_names_are_unique_across_sections():
    names = [n for s in Config.SECTIONS for n in vars(getattr(Config(), s))]
    assert len(names) == len(set(names)) == len(Config().flat())


def test_yaml_round_trip_is_exact(tmp_path):
    cfg = Config().replace({"method": "adapter", "lr": 1e-4, "grad_clip": 2.0, "dataset": "sop", "weights": "/w.npz"})
    path = cfg.dump(tmp_path / "sub" / "c.yaml", header="exported\nby a test")
    assert path.read_text().startswith("# exported\n# by a test\n")
    assert Config.load(path) == cfg
    assert Config.load(path).dump(tmp_path / "again.yaml").read_text() == cfg.dump(tmp_path / "x.yaml").read_text()


def test_flat_keys_at_top_level_are_accepted(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 0.01\nmodel:\n  method: vpt\n")
    cfg = Config.load(path)
    assert cfg.optim.lr == 0.01 and cfg.model.method == "vpt"


@pytest.mark.parametrize("text,message", [
    ("optim:\n  lr_proxi: 0.1\n", r"unknown key 'optim.lr_proxi' \(did you mean 'optim.lr_proxy'\?\)"),
    ("proxy_bias_ration: 0.3\n", r"unknown key 'proxy_bias_ration' \(did you mean 'proxy_bias_ratio'\?\)"),
    ("model:\n  lr: 0.1\n", "key 'lr' belongs in section 'optim', not 'model'"),
    ("model:\n  num_prompts: ten\n", "key 'num_prompts' must be int, got 'ten'"),
    ("model:\n  num_prompts: 2.5\n", "key 'num_prompts' must be int"),
    ("model:\n  bitfit: 1\n", "key 'bitfit' must be bool"),
    ("model:\n  method: lora\n", "key 'method' must be one of 'full'"),
    ("model:\n  proxy_bias_ratio: 1.5\n", r"key 'proxy_bias_ratio' must be in \[0.0, 1.0\]"),
    ("model:\n  prompt_step: -1\n", r"key 'prompt_step' must be in \[0, inf\]"),
    ("optim:\n  lr: .nan\n", "key 'lr' must be float"),
    ("data:\n  batch_size: 63\n", "batch_size 63 is not a multiple of samples_per_class 2"),
    ("model: 3\n", "section 'model' must be a mapping"),
    ("model:\n  method: [vpt\n", "invalid YAML at line 3"),
    ("- a\n- b\n", "expected a mapping of sections, got list"),
    ("model:\n  num_prompts: 3\n  num_prompts: 4\n", "invalid YAML at line 3: key 'num_prompts' given twice"),
])
def test_bad_files_name_file_and_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        Config.load(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: cannot read config"):
        Config.load(tmp_path / "nope.yaml")


def test_int_is_accepted_for_float_and_optional_none():
    cfg = Config().replace({"adapter_scale": 1, "img_size": None, "weights": None})
    assert cfg.model.adapter_scale == 1.0 and isinstance(cfg.model.adapter_scale, float)


def test_overrides_parse_like_yaml_and_validate():
    cfg = Config().with_overrides(["num_prompts=80", "proxy_bias_ratio=0.7", "bitfit=false", "lr=1e-3",
                                   "proxy_prompts=class+sample", "weights=null", "grad_clip=1"])
    assert (cfg.model.num_prompts, cfg.model.proxy_bias_ratio, cfg.model.bitfit) == (80, 0.7, False)
    assert cfg.optim.lr == 1e-3 and cfg.model.proxy_prompts == "class+sample" and cfg.optim.grad_clip == 1.0
    with pytest.raises(ConfigError, match="expected key=value"):
        Config().with_overrides(["num_prompts"])
    with pytest.raises(ConfigError, match="--set: key 'num_prompts' must be int"):
        Config().with_overrides(["num_prompts=many"])
    with pytest.raises(ConfigError, match=r"--set: unknown key 'learning_rate'"):
        Config().with_overrides(["learning_rate=0.1"])


def test_every_shipped_experiment_config_loads():
    from pathlib import Path

    files = sorted((Path(__file__).parent.parent / "experiments").glob("*.yaml"))
    assert len(files) >= 10
    for path in files:
        cfg = Config.load(path)
        assert cfg.data.dataset in path.name
