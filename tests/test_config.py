"""The typed config: YAML round trip, unknown keys with suggestions, types, ranges, overrides."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from semproxy.config import Config, ConfigError
from semproxy.typed_config import MAX_MESSAGE, short


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
    ("model:\n  method: prefix\n", "key 'method' must be one of 'full'"),
    ("model:\n  proxy_bias_ratio: 1.5\n", r"key 'proxy_bias_ratio' must be in \[0.0, 1.0\]"),
    ("model:\n  prompt_step: -1\n", r"key 'prompt_step' must be in \[0, 1024\]"),
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


@pytest.mark.parametrize("space", ["vptsp.yaml", "global.yaml"])
def test_a_search_space_given_as_a_config_is_named_as_a_search_space(space):
    path = Path(__file__).parent.parent / "search_spaces" / space
    with pytest.raises(ConfigError) as info:
        Config.load(path)
    assert str(info.value).startswith(f"{path} is a search space (for tune.py --space), not a training config (it "
                                      "has top-level '"), info.value
    assert "unknown key" not in str(info.value)


def test_a_config_with_a_stray_space_key_is_still_an_unknown_key(tmp_path):
    """Only a file whose foreign keys are all a space's (and say so) is taken for a space."""
    path = tmp_path / "bad.yaml"
    path.write_text("params:\n  lr: 0.1\nmodle:\n  method: vpt\n")
    with pytest.raises(ConfigError, match="unknown key 'params'"):
        Config.load(path)


def test_the_search_space_keys_config_knows_are_the_spaces():
    from semproxy.config import SPACE_KEYS
    from semproxy.search.space import TOP_KEYS

    assert set(SPACE_KEYS) == set(TOP_KEYS)


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


# -- hostile and malformed files: one-line errors, bounded time and memory ------------------------

def _bomb(levels: int = 9) -> str:
    """A "billion laughs" alias tree: 9 ** levels strings from a few hundred bytes."""
    tree = "[&a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"
    tree += "".join(f", &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels + 1))
    return tree + "]"


@pytest.mark.parametrize("content,message", [
    (f"model:\n  num_prompts: {_bomb()}\n".encode(), "invalid YAML at line 2: aliases expand to more than 10000"),
    (f"a: &x {_bomb(2)}\nb: [{', '.join(['*x'] * 101)}]\n".encode(), "more than 100 aliases"),
    (b"model:\n  num_prompts: " + b"[" * 20000 + b"]" * 20000 + b"\n", "nested deeper than 50 levels"),
    (b"optim: &a\n  lr: *a\n", "nested deeper than 50 levels"),  # a recursive alias
    (b"model:\n  [a, b]: 3\n", "a mapping key must be a single value, not a list"),
    (b"model:\n  backbone: " + b"x" * 5000 + b"\n", "a value longer than 4096 characters"),
    (b"optim:\n  lr: 2001-13-45\n", "invalid YAML: month must be in 1..12"),
    ("optim:\n  lr: 0.1\n".encode("utf-16"), "the config is UTF-16 text; save it as UTF-8"),
    ("optim:\n  lr: 0.1\n".encode("utf-16-le"), "not text (a NUL byte at offset 1"),
    (bytes(range(256)) * 4, "not text (a NUL byte at offset 0"),
    ("optim:\n  lr: 0.1  # d\u00e9j\u00e0\n".encode("latin-1"), "not UTF-8 text (byte 0xe9 at offset 21)"),
    (b"# " + b"x" * (1 << 20) + b"\n", "the config is larger than 1 MiB"),
    (b"optim:\n  lr: !!python/object/apply:os.system [echo hi]\n", "could not determine a constructor for the tag"),
])
def test_hostile_files_are_refused_quickly_in_one_line(tmp_path, content, message):
    import resource
    import time

    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    before, start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        Config.load(path)
    assert time.perf_counter() - start < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 * 1024  # KiB
    text = str(info.value)
    assert text.startswith(f"{path}: ") and "\n" not in text and len(text) <= MAX_MESSAGE


@pytest.mark.parametrize("text", [
    "model:\n  num_prompts: [" + "1234567, " * 5000 + "]\n",   # printed whole, this was a 45 KB message
    "model:\n  method: " + "v" * 4000 + "\n",
    "x" * 1000 + "y: 1\n",                                      # a long unknown key
])
def test_messages_quote_values_briefly(tmp_path, text):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        Config.load(path)
    assert str(info.value).startswith(f"{path}: ") and len(str(info.value)) <= MAX_MESSAGE


def test_one_line_messages_keep_their_start_and_end():
    error = ConfigError("f.yaml: key 'x'\nmust be " + "a" * 1000 + " or b")
    assert "\n" not in str(error) and len(str(error)) == MAX_MESSAGE
    assert str(error).startswith("f.yaml: key 'x' must be") and str(error).endswith("a or b")
    assert short(10 ** 4000) == "<int of ~3986 digits>" and len(short(list(range(10 ** 4)))) < 60


def test_merge_keys_are_accepted_and_explicit_keys_override_them(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim: &base\n  lr: 0.01\n  momentum: 0.5\nmodel:\n  num_prompts: 4\n"
                    "eval:\n  <<: {eval_every: 2, eval_batch_size: 16}\n  eval_batch_size: 32\n")
    cfg = Config.load(path)
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.eval.eval_every, cfg.eval.eval_batch_size) == (0.01, 0.5, 2, 32)
    path.write_text("defaults: &d {lr: 0.01}\noptim:\n  <<: *d\n")
    with pytest.raises(ConfigError, match="unknown key 'defaults'"):  # merging works; the anchor's key is unknown
        Config.load(path)
    path.write_text("optim:\n  <<: {lr: 0.01}\n  momentum: 0.5\n  momentum: 0.6\n")
    with pytest.raises(ConfigError, match="at line 4: key 'momentum' given twice"):
        Config.load(path)


def test_every_size_and_count_knob_has_an_upper_bound():
    for section in Config.SECTIONS:
        for f in dataclasses.fields(getattr(Config(), section)):
            if f.type in ("int", "Optional[int]"):
                assert f.metadata["high"] is not None, f.name


@pytest.mark.parametrize("key,value", [("num_prompts", 20_000_000), ("embedding_dim", 10 ** 30),
                                       ("adapter_dim", 2 ** 40), ("class_prompts", 5000), ("batch_size", 2 ** 31),
                                       ("img_size", 100_000), ("seed", 2 ** 64), ("synthetic_classes", 10 ** 6)])
def test_huge_sizes_are_range_errors(key, value):
    with pytest.raises(ConfigError, match=rf"--set: key '{key}' must be in \[\d+, \d+\], got {value}"):
        Config().with_overrides([f"{key}={value}"])


def test_an_int_beyond_a_float_is_a_type_error_not_an_overflow():
    with pytest.raises(ConfigError, match="key 'lr' must be float, got <int of"):
        Config().replace({"lr": 10 ** 400})


def test_override_values_are_parsed_safely():
    with pytest.raises(ConfigError, match=r"^--set num_prompts: invalid YAML at line 1: could not determine a "
                                          r"constructor for the tag 'tag:yaml.org,2002:python/object:os.system'"):
        Config().with_overrides(["num_prompts=!!python/object:os.system x"])
    with pytest.raises(ConfigError, match="^--set lr: invalid YAML at line 1: expected the node content"):
        Config().with_overrides(["lr=["])
    with pytest.raises(ConfigError, match="aliases expand to more than 10000 values"):
        Config().with_overrides([f"num_prompts={_bomb()}"])


@pytest.mark.parametrize("device", ["banana", "cuda:", "cuda:-1", "cuda:01", "cuda:12345", "CPU", "mps", "cuda:0 "])
def test_device_names_are_checked_at_load(tmp_path, device):
    path = tmp_path / "c.yaml"
    path.write_text(f"eval:\n  device: '{device}'\n")
    with pytest.raises(ConfigError, match=f"^{re.escape(str(path))}: key 'device' must be 'auto', 'cpu', 'cuda'"):
        Config.load(path)


def test_a_missing_gpu_is_a_config_error_naming_what_exists(monkeypatch):
    import torch

    from semproxy.device import resolve_device

    assert Config().replace({"device": "cuda:7"}).eval.device == "cuda:7"  # the form is fine everywhere
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("cuda", "cuda:7"):
        with pytest.raises(ConfigError, match=f"^c.yaml: key 'device' is '{name}' but this machine has no CUDA device"):
            resolve_device(name, "c.yaml")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    for name in ("cuda:7", "cuda:1234", "cuda:255"):  # torch.device reads these two as cuda:-46 and cuda:-1
        with pytest.raises(ConfigError, match=f"'{name}' but this machine has only cuda:0, cuda:1;"):
            resolve_device(name)
    assert resolve_device("cuda:1") == torch.device("cuda", 1) and resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")


# -- the memory a model needs, checked before it is built -------------------------------------------

def test_memory_estimate_counts_exactly_what_build_model_allocates(monkeypatch):
    from conftest import micro_config

    from semproxy.models import build_model, memory

    for method in ("vptsp_gru", "adapter", "full"):
        cfg = micro_config(method=method, bitfit=True)
        model = build_model(cfg, 7)
        monkeypatch.setattr(memory, "TRAINED_COPIES", 1)
        monkeypatch.setattr(memory, "BANK_COPIES", 1)
        real = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
        assert sum(memory.model_memory(cfg, 7).values()) == real
        monkeypatch.undo()
    parts = memory.model_memory(micro_config(class_prompts=5, class_prompt_depth=3, class_prompt_step=1), 1000)
    assert parts["semantic bank"] == 1000 * (5 + 4 + 3) * 64 * 4 * memory.BANK_COPIES  # classes x prompts x width


def test_a_model_that_cannot_fit_is_refused_before_it_is_built(monkeypatch):
    from conftest import micro_config

    from semproxy.models import build_model, memory

    monkeypatch.setattr(memory, "available_memory", lambda: 10 * 2**20)
    with pytest.raises(ConfigError, match=r"^model: the model needs ~0.1 GiB for 100000 classes with gradients and optimiser "
                                          r"state \(semantic bank 0.1 GiB: lower class_prompts, class_prompt_depth\) "
                                          r"but 0.0 GiB of memory is available$"):
        build_model(micro_config(class_prompts=1, class_prompt_depth=1), 100_000)
    build_model(micro_config(class_prompts=1, class_prompt_depth=1), 10)  # fits
    monkeypatch.setattr(memory, "available_memory", lambda: None)  # unknown (not Linux): not checked
    build_model(micro_config(class_prompts=1, class_prompt_depth=1), 100_000)


def test_available_memory_reads_meminfo(monkeypatch, tmp_path):
    from semproxy.models import memory

    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       32000000 kB\nMemFree:  100 kB\nMemAvailable:   16000000 kB\n")
    monkeypatch.setattr(memory, "MEMINFO", meminfo)
    assert memory.available_memory() == 16_000_000 * 1024
    monkeypatch.setattr(memory, "MEMINFO", tmp_path / "absent")
    assert memory.available_memory() is None


@pytest.mark.parametrize("text", ["lr: 0.1\noptim:\n  lr: 0.2\n", "optim:\n  lr: 0.2\nlr: 0.1\n"])
def test_a_key_given_flat_and_in_its_section_is_refused_in_either_order(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="key 'lr' given twice \\(at the top level and in section 'optim'\\)"):
        Config.load(path)
