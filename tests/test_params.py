"""Parameter accounting on ViT-S/16 (random weights): the parts, and the command that prints them.

Each method's total, against counts worked out by hand, is a contract test in test_methods.py.
"""
from __future__ import annotations

import dataclasses

from semproxy.models import build_model, count_parameters
from semproxy.cli.params import main
from test_methods import BIASES_COUNT, C, CLASS_PROMPTS, GRU, HEAD, LORA, PROMPTS, PROXIES, VIT_S_CONFIG


def _parts(method: str, bitfit: bool) -> dict[str, int]:
    model = build_model(dataclasses.replace(VIT_S_CONFIG, method=method, bitfit=bitfit), C)
    return count_parameters(model, classes_per_batch=32).parts


def test_parts_name_what_each_method_adds():
    assert _parts("lora", True) == {"backbone biases": BIASES_COUNT, "lora": LORA, "head": HEAD, "proxy_bias": PROXIES}
    assert _parts("vptsp_gru", False) == {"prompts": PROMPTS, "head": HEAD, "proxy_bias": PROXIES,
                                          "semantic head": HEAD, "semantic accumulator": GRU,
                                          "semantic class prompts": C * CLASS_PROMPTS}


def test_cli_prints_the_table(capsys):
    argv = ["--methods", "linear,vpt,lora", "--set", "backbone=vit_small_patch16_224", "--set", "bitfit=false"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "187,008" in out and "233,088" in out and "334,464" in out and "21,665,664" in out


def test_cli_rejects_bad_input_in_one_line(capsys):
    assert main(["--set", "num_promts=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --set: unknown key 'num_promts' (did you mean 'num_prompts'?)"
    assert main(["--methods", "prefix"]) == 2
    assert "unknown method 'prefix'" in capsys.readouterr().err
