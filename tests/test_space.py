"""Search spaces: shipped files, paper ranges, conditions, narrowing, and one-line errors without Ray."""
from __future__ import annotations

import pickle
from pathlib import Path

import optuna
import pytest

from semproxy.config import Config, ConfigError
from semproxy.search import load_space
from semproxy.search.searcher import make_sampler
from semproxy.search.space import ParamSpec, fit_batches_to_classes
from tune import main as tune_main

SPACES = Path(__file__).parent.parent / "search_spaces"
optuna.logging.set_verbosity(optuna.logging.WARNING)


def _sample(space, n, sampler):
    study = optuna.create_study(direction="maximize", sampler=sampler)
    out = []
    for i in range(n):
        trial = study.ask()
        constants = space.define_by_run()(trial)
        out.append({**space.fixed, **trial.params, **constants})
        study.tell(trial, float(i % 7))
    return out


def test_every_shipped_space_loads():
    names = sorted(p.name for p in SPACES.glob("*.yaml"))
    assert names == ["adapter.yaml", "bitfit.yaml", "full.yaml", "global.yaml", "linear.yaml", "lora.yaml",
                     "peft_compare.yaml", "vpt.yaml", "vptsp.yaml"]
    spaces = {name: load_space(SPACES / name) for name in names}
    for space in spaces.values():
        pickle.loads(pickle.dumps(space.define_by_run()))  # the searcher is pickled by Tune
    shared = [p.name for p in spaces["global.yaml"].params]  # every method's space extends the global group
    assert all([p.name for p in space.params][:len(shared)] == shared for space in spaces.values())


PAPER = {  # method.md section 5 (Table 9)
    "optimizer": {"sgd", "adam", "adamw"}, "batch_size": {32, 64}, "samples_per_class": {1, 2},
    "lr": {0.05, 0.01, 0.005, 0.001, 0.0005, 0.0001}, "lr_proxy": {0.5, 0.1, 0.05, 0.01, 0.005, 0.001},
    "prompt_depth": set(range(1, 13)), "num_prompts": {1, 5, 10, 30, 50, 70, 90}, "prompt_step": {0, 2, 5, 10},
    "class_prompt_depth": {2, 4, 6, 8, 10, 12}, "class_prompts": {1, 3, 5, 10, 40, 80},
    "proxy_bias_ratio": {round(0.1 * i, 1) for i in range(1, 10)},
}


def test_vptsp_space_samples_only_the_papers_values():
    space = load_space(SPACES / "vptsp.yaml")
    samples = _sample(space, 200, optuna.samplers.RandomSampler(seed=0))
    for sample in samples:
        assert sample["method"] == "vptsp_gru"
        for key, allowed in PAPER.items():
            value = round(sample[key], 6) if isinstance(sample[key], float) else sample[key]
            assert value in allowed, (key, sample[key])
    assert {s["prompt_depth"] for s in samples} == PAPER["prompt_depth"]  # the whole range is reached


def test_conditional_parameters_appear_only_under_their_condition():
    space = load_space(SPACES / "peft_compare.yaml")
    samples = _sample(space, 60, make_sampler(0, "tpe"))  # the searcher's TPE: multivariate, grouped
    assert {s["method"] for s in samples} >= {"adapter", "vpt", "vptsp_gru"}
    for s in samples:
        assert ("adapter_dim" in s) == (s["method"] == "adapter")
        assert ("num_prompts" in s) == (s["method"] in ("vpt", "vptsp_ema", "vptsp_gru"))
        assert ("class_prompts" in s) == s["method"].startswith("vptsp")
        assert ("ema_keep" in s) == (s["method"] == "vptsp_ema")
        assert ("bitfit" in s) == (s["method"] in ("adapter", "lora", "vpt", "vptsp_ema", "vptsp_gru"))
        Config().replace(s)  # every sample is a valid config


def test_distributions_and_fixed_conditionals(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("params:\n  method: {choice: [vpt, adapter]}\n  lr: {loguniform: [1.0e-4, 1.0e-2]}\n"
                    "  weight_decay: {uniform: [0, 0.1]}\n  adapter_dim: {qrandint: [8, 64, 8]}\n"
                    "  num_prompts: {randint: [1, 3], when: {method: vpt}}\n"
                    "  adapter_norm: {choice: [post], when: {method: adapter}}\n"
                    "  adapter_scale: {quniform: [0.1, 0.5, 0.1]}\n"
                    "starts:\n  - {method: vpt, lr: 0.001, weight_decay: 0.0, adapter_dim: 16, num_prompts: 2,"
                    " adapter_scale: 0.2}\n")
    space = load_space(path)
    assert space.starts == ({"method": "vpt", "lr": 0.001, "weight_decay": 0.0, "adapter_dim": 16,
                             "num_prompts": 2, "adapter_scale": 0.2},)
    for s in _sample(space, 40, optuna.samplers.RandomSampler(seed=1)):
        assert 1e-4 <= s["lr"] <= 1e-2 and 0 <= s["weight_decay"] <= 0.1 and s["adapter_dim"] % 8 == 0
        assert (s["method"] == "vpt") == ("num_prompts" in s) and s.get("num_prompts", 1) in (1, 2, 3)
        assert s.get("adapter_norm", "post") == "post" and ("adapter_norm" in s) == (s["method"] == "adapter")


def test_batches_narrowed_to_the_training_classes():
    space = load_space(SPACES / "vptsp.yaml")
    narrowed, notes = fit_batches_to_classes(space, Config(), num_classes=16)
    assert narrowed.fixed["batch_size"] == 32 and narrowed.fixed["samples_per_class"] == 2
    assert len(notes) == 2
    unchanged, notes = fit_batches_to_classes(space, Config(), num_classes=80)
    assert notes == [] and unchanged == space
    with pytest.raises(ConfigError, match="no batch_size / samples_per_class"):
        fit_batches_to_classes(space, Config(), num_classes=8)


BAD = [
    ("params:\n  num_promts: 3\n", "unknown key 'num_promts' (did you mean 'num_prompts'?)"),
    ("params:\n  optimizer: {choice: []}\n", "key 'optimizer': 'choice' needs a non-empty list"),
    ("params:\n  lr: {uniform: [0.1, 0.01]}\n", "key 'lr': low 0.1 > high 0.01"),
    ("params:\n  lr: {loguniform: [0, 0.1]}\n", "key 'lr': loguniform needs positive bounds"),
    ("params:\n  method: prefix\n", "key 'method': 'prefix' is not a valid value"),
    ("params:\n  method: [vpt\n", "invalid YAML at line 3"),
    ("params:\n  lr: {normal: [0, 1]}\n", "key 'lr': expected one of choice"),
    ("params:\n  prompt_depth: {randint: [1, 12.5]}\n", "key 'prompt_depth': 'randint' needs integer bounds"),
    ("params:\n  num_prompts: {randint: [1, 3], when: {method: vpt}}\n  method: vpt\n",
     "key 'num_prompts': 'when' refers to 'method', which is not a parameter above it"),
    ("params:\n  backbone: {choice: [vit_micro_patch8_32, vit_small_patch16_224]}\n",
     "key 'backbone' cannot be searched"),
    ("params:\n  proxy_bias_ratio: {uniform: [0.1, 1.5]}\n", "key 'proxy_bias_ratio': 1.5 is outside"),
    ("param:\n  lr: 0.1\n", "expected a mapping with a non-empty 'params:' mapping"),
    ("params:\n  lr: 0.1\nsearch:\n  num_sample: 3\n", "unknown key 'search.num_sample'"),
    ("params:\n  lr: {choice: [0.1, 0.01]}\nstarts:\n  - {lr: 0.5}\n",
     "starts[1] {'lr': 0.5} does not lie in the space"),
    # non-finite and huge numbers
    ("params:\n  lr: {quniform: [0, 1, .nan]}\n", "key 'lr': 'quniform' needs 3 finite numbers, got [0, 1, nan]"),
    ("params:\n  lr: {quniform: [0, 1, .inf]}\n", "key 'lr': 'quniform' needs 3 finite numbers"),
    ("params:\n  lr: {uniform: [-.inf, 1]}\n", "key 'lr': 'uniform' needs 2 finite numbers"),
    ("params:\n  lr: {uniform: [0, 1" + "0" * 400 + "]}\n", "key 'lr': 'uniform' needs 2 finite numbers, got [0, <int"),
    ("params:\n  num_prompts: {randint: [1, 20000000]}\n", "key 'num_prompts': 20000000 is outside the field's range"),
    # degenerate distributions
    ("params:\n  num_prompts: {qrandint: [1, 5, 10]}\n", "key 'num_prompts': the step 10 is wider than the range"),
    ("params:\n  lr: {quniform: [0.1, 0.2, 0.5]}\n", "key 'lr': the step 0.5 is wider than the range [0.1, 0.2]"),
    ("params:\n  num_prompts: {choice: [1, 5, 1]}\n", "key 'num_prompts': 'choice' lists 1 twice"),
    ("params:\n  lr: {choice: [0.5, 1, 1.0]}\n", "key 'lr': 'choice' lists 1.0 twice"),
    ("params:\n  method: vptsp_gru\n  adapter_dim: {choice: [8, 16], when: {method: adapter}}\n",
     "key 'adapter_dim': 'when' names method = 'adapter', a value 'method' never takes in this space"),
    ("params:\n  method: {choice: [vpt, vptsp_gru]}\n  adapter_dim: {choice: [8], when: {method: [vpt, adapter]}}\n",
     "key 'adapter_dim': 'when' names method = 'adapter', a value 'method' never takes"),
    ("params:\n  num_prompts: {randint: [1, 4]}\n  prompt_step: {choice: [1], when: {num_prompts: 9}}\n",
     "key 'prompt_step': 'when' names num_prompts = 9"),
    ("params:\n  method: {choice: [vpt, adapter]}\n  adapter_dim: {choice: [8], when: {method: []}}\n",
     "key 'adapter_dim': 'when' lists no value of 'method'"),
    # malformed YAML and structure
    ("params:\n  [lr, lr_proxy]: 0.1\n", "invalid YAML at line 2: a mapping key must be a single value, not a list"),
    ("params:\n  num_prompts: {choice: [&a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol], "
     + ", ".join(f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)) + "]}\n",
     "invalid YAML at line 2: aliases expand to more than 10000 values"),
    ("params:\n  lr: " + "[" * 20000 + "]" * 20000 + "\n", "invalid YAML at line 2: nested deeper than 50 levels"),
    ("params:\n  lr: 0.1\nsearch: 0\n", "'search' must be a mapping, got 0"),
    ("params:\n  lr: 0.1\nstarts: false\n", "'starts' must be a list of mappings"),
]


@pytest.mark.parametrize("text,message", BAD)
def test_malformed_space_is_one_line_exit_2_and_no_ray(tmp_path, capsys, text, message):
    import ray

    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert tune_main(["--space", str(path), "--dataset", "synthetic", "--storage", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {path}: ") and message in err and "\n" not in err
    assert not ray.is_initialized() and not (tmp_path / "runs").exists()


def test_merge_keys_share_settings_between_parameters(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("params:\n  method: {choice: [vpt, adapter]}\n"
                    "  adapter_dim: &adapter {choice: [8, 16], when: {method: adapter}}\n"
                    "  adapter_layers: {<<: *adapter, choice: [1, 2]}\n")
    assert load_space(path).params[2] == ParamSpec("adapter_layers", "choice", (1, 2), {"method": ("adapter",)})


@pytest.mark.parametrize("content,message", [
    ("params:\n  lr: 0.1\n".encode("utf-16"), "the search space is UTF-16 text; save it as UTF-8"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "the search space is not text (a NUL byte at offset 8"),
    (b"params:\n  lr: 0.1 # \xff\n", "the search space is not UTF-8 text (byte 0xff at offset 20)"),
])
def test_binary_and_foreign_encodings_are_one_line_errors(tmp_path, capsys, content, message):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    assert tune_main(["--space", str(path), "--dataset", "synthetic", "--storage", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {path}: {message}") and "\n" not in err


def test_a_step_as_wide_as_the_range_is_accepted(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("params:\n  lr: {quniform: [0.1, 0.3, 0.2]}\n  num_prompts: {qrandint: [1, 5, 4]}\n")
    assert [p.args for p in load_space(path).params] == [(0.1, 0.3, 0.2), (1, 5, 4)]  # 0.3 - 0.1 < 0.2 in floats


def test_a_space_extends_another_its_params_after_the_bases_and_overriding_in_place(tmp_path):
    (tmp_path / "base.yaml").write_text("params:\n  optimizer: {choice: [sgd, adam]}\n  lr: {choice: [0.1, 0.01]}\n"
                                        "search:\n  num_samples: 5\n  max_epochs: 7\nstarts:\n  - {optimizer: sgd, lr: 0.1}\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\nparams:\n  method: vpt\n  lr: {choice: [0.1, 0.001]}\n"
                                         "search:\n  num_samples: 9\n")
    space = load_space(tmp_path / "child.yaml")
    assert [(p.name, p.args) for p in space.params] == [("optimizer", ("sgd", "adam")), ("lr", (0.1, 0.001)),
                                                         ("method", ("vpt",))]
    assert space.search == {"num_samples": 9, "max_epochs": 7} and space.starts == ({"optimizer": "sgd", "lr": 0.1},)


@pytest.mark.parametrize("base,child,message", [
    ("params:\n  lr: {choice: [oops]}\n", "extends: base.yaml\nparams:\n  method: vpt\n", "base.yaml: key 'lr'"),
    ("extends: child.yaml\nparams:\n  lr: 0.1\n", "extends: base.yaml\nparams:\n  method: vpt\n", "makes a cycle"),
    (None, "extends: missing.yaml\nparams:\n  method: vpt\n",
     "child.yaml: key 'extends': .*missing.yaml cannot be read \\(No such file or directory\\)"),
    ("params:\n  lr: 0.1\n", "extends: [1, 2]\nparams:\n  method: vpt\n", "'extends' must be a file name"),
])
def test_a_bad_base_space_is_a_one_line_error_naming_the_file_at_fault(tmp_path, base, child, message):
    if base is not None:
        (tmp_path / "base.yaml").write_text(base)
    (tmp_path / "child.yaml").write_text(child)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_space(tmp_path / "child.yaml")


def test_a_missing_base_names_the_space_that_extends_it_and_the_closest_file(tmp_path):
    (tmp_path / "global.yaml").write_text("params:\n  lr: 0.1\n")
    (tmp_path / "vpt.yaml").write_text("extends: globl.yaml\nparams:\n  method: vpt\n")
    with pytest.raises(ConfigError) as info:
        load_space(tmp_path / "vpt.yaml")
    assert str(info.value) == (f"{tmp_path / 'vpt.yaml'}: key 'extends': {tmp_path / 'globl.yaml'} cannot be read "
                               f"(No such file or directory); did you mean 'global.yaml'?")
    (tmp_path / "folder.yaml").mkdir()
    (tmp_path / "vpt.yaml").write_text("extends: [global.yaml, folder.yaml]\nparams:\n  method: vpt\n")
    with pytest.raises(ConfigError, match=r"vpt.yaml: key 'extends': .*folder.yaml cannot be read \(Is a directory\)"):
        load_space(tmp_path / "vpt.yaml")
