"""Every command line's help: its usage names the program as it was run, and each flag's help reads right.

The commands run as ``python tune.py`` / ``python -m semproxy.X`` from a checkout and as the installed
scripts of pyproject.toml's [project.scripts] (``semproxy-tune``, ...); their usage lines and hints
name whichever ran. Help texts are built from pieces (``_typed_flags``' default phrases), so they are
rendered here in full and read for what a piece can leave behind.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The installed script -> its entry point's module and how one types it from a checkout.
SCRIPTS = {"semproxy-tune": ("semproxy.cli.tune", "python tune.py"),
           "semproxy-train": ("semproxy.cli.train", "python -m semproxy.train"),
           "semproxy-evaluate": ("semproxy.cli.evaluate", "python -m semproxy.evaluate"),
           "semproxy-data": ("semproxy.cli.data", "python -m semproxy.data"),
           "semproxy-params": ("semproxy.cli.params", "python -m semproxy.models")}


def _parsers() -> list[argparse.ArgumentParser]:
    """Every parser of every command, subcommands' included."""
    from semproxy.cli import data, evaluate, params, train, tune
    from semproxy.tools import pretrain_micro

    top = [tune.search_parser(), tune.export_parser(), tune.report_parser(), tune.dashboard_parser(),
           tune.compare_parser(), train.build_parser(), evaluate.build_parser(), data.build_parser(),
           params.build_parser(), pretrain_micro.build_parser()]
    found = []
    while top:
        parser = top.pop()
        found.append(parser)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                top.extend(action.choices.values())
    return found


def _help(parser: argparse.ArgumentParser) -> str:
    """The help as printed, its lines joined (argparse wraps them at the terminal's width)."""
    return " ".join(parser.format_help().split())


def _build(module: str) -> argparse.ArgumentParser:
    import importlib

    cli = importlib.import_module(module)
    return cli.search_parser() if module.endswith(".tune") else cli.build_parser()


def test_no_flag_help_has_an_empty_default_or_the_override_typo():
    for parser in _parsers():
        text = _help(parser)
        assert "else )" not in text and "else, )" not in text, (parser.prog, text)
        assert " override (" not in text.replace("the spaces override (", ""), (parser.prog, text)


def test_the_search_help_says_what_overrides_the_config_and_that_no_constraints_is_the_default():
    from semproxy.cli.tune import compare_parser, search_parser

    assert "base config the space overrides (default" in _help(search_parser())
    assert "base config the spaces override (default" in _help(compare_parser())
    constraints = next(a for a in search_parser()._actions if "--constraints" in a.option_strings)
    assert constraints.help.endswith("(default: the space's search.constraints, else none)")


def test_every_flag_of_pretrain_micro_says_its_default_and_out_that_it_replaces_the_shipped_file():
    from semproxy.models.backbone import MICRO_SYNTHETIC_WEIGHTS
    from semproxy.tools.pretrain_micro import build_parser

    parser = build_parser()
    for action in parser._actions:
        if action.option_strings and action.nargs != 0:
            assert "(default: %(default)s" in (action.help or ""), action.option_strings
    out = next(a for a in parser._actions if "--out" in a.option_strings)
    assert out.default == MICRO_SYNTHETIC_WEIGHTS and "the shipped weights, which it replaces" in out.help
    assert "(default: 30)" in _help(parser) and "(default: 0.003)" in _help(parser)


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_an_installed_script_names_itself_in_usage_and_a_checkout_run_its_typed_form(monkeypatch, script):
    module, typed = SCRIPTS[script]
    monkeypatch.setattr(sys, "argv", [f"/venv/bin/{script}", "--help"])
    assert _build(module).format_usage().startswith(f"usage: {script} ")
    # from a checkout: `python tune.py`, or `python -m semproxy.X`, whose argv[0] is the package's __main__.py
    checkout = ROOT / "tune.py" if script == "semproxy-tune" else ROOT / "semproxy" / "train" / "__main__.py"
    monkeypatch.setattr(sys, "argv", [str(checkout), "--help"])
    assert _build(module).format_usage().startswith(f"usage: {typed} ")


def test_tune_subcommands_and_hints_name_the_installed_script(monkeypatch, capsys):
    from semproxy.cli import tune

    monkeypatch.setattr(sys, "argv", ["/venv/bin/semproxy-tune"])
    assert tune.export_parser().prog == "semproxy-tune export"
    assert tune.compare_parser().prog == "semproxy-tune compare"
    assert "Subcommands: semproxy-tune export RUN_DIR" in _help(tune.search_parser())
    assert tune.main(["exprot"]) == 2
    assert capsys.readouterr().err.endswith("(see semproxy-tune --help)\n")


def test_the_entry_points_are_the_scripts_tested_here():
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert {name: target.split(":")[0] for name, target in scripts.items()} == {
        name: module for name, (module, _) in SCRIPTS.items()}


def test_the_installed_params_script_prints_its_own_name():
    script = Path(sys.executable).parent / "semproxy-params"
    if not script.exists():
        pytest.skip("semproxy is not installed in this environment")
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.startswith("usage: semproxy-params ") and "python -m semproxy.models" not in done.stdout
