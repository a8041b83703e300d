"""The import contract: semproxy's layers, each importing only from the layers below it.

Every import of every module under ``semproxy/`` (lazy ones inside functions included) is read
from the source and checked against :data:`LAYERS`. Components of one layer are independent of
each other (data, losses and metrics know nothing of one another). Executables are exempt: the
``__main__`` modules and the ``python -m semproxy.evaluate`` shim only hand over to ``semproxy.cli``.
A new upward import fails here, naming the file, the line and the layers.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "semproxy"

#: Bottom to top. A component is ``semproxy.<name>`` (a module or a package).
LAYERS: list[set[str]] = [
    {"errors"},
    {"typed_config", "atomic", "run_lock", "provenance", "host_memory", "metric_names"},
    {"config"},
    {"device", "presets"},
    {"data", "losses", "metrics"},
    {"models"},
    {"optim", "checkpoint", "prepared"},
    {"evaluation"},
    {"train"},
    {"search"},
    {"cli", "tools"},
]
EXECUTABLES = {"semproxy.evaluate"}  # plus every __main__ module


def _layer(component: str) -> int:
    for number, layer in enumerate(LAYERS):
        if component in layer:
            return number
    raise KeyError(f"semproxy.{component} is in no layer: add it to LAYERS in {__file__}")


def _imports(module: str, source: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, absolute module) of every import of ``source``, relative ones resolved."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            found += [(node.lineno, target)] if node.module else [(node.lineno, f"{target}.{a.name}") for a in node.names]
    return found


def violations(sources: dict[str, tuple[str, bool]]) -> list[str]:
    """Imports that break the contract, as 'module:line imports target (target is above module)'.

    Args:
        sources: module name -> (source text, whether it is a package's ``__init__``).
    """
    problems = []
    for module, (source, is_package) in sorted(sources.items()):
        if module in EXECUTABLES or module.endswith("__main__") or module == "semproxy":
            continue
        own = module.split(".")[1]
        for line, target in _imports(module, source, is_package):
            if not target.startswith("semproxy.") or target.split(".")[1] == own:
                continue
            other = target.split(".")[1]
            if _layer(other) >= _layer(own):
                relation = "beside" if _layer(other) == _layer(own) else "above"
                problems.append(f"{module}:{line} imports {target} (semproxy.{other} is {relation} semproxy.{own})")
    return problems


def _package_sources() -> dict[str, tuple[str, bool]]:
    sources = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if any(part in ("experiments", "search_spaces") for part in parts):
            continue
        is_package = parts[-1] == "__init__"
        module = ".".join(parts[:-1] if is_package else parts)
        sources[module] = (path.read_text(encoding="utf-8"), is_package)
    return sources


def test_every_module_imports_only_from_the_layers_below():
    sources = _package_sources()
    assert len(sources) > 50 and all(m.count(".") for m in sources if m != "semproxy")
    assert violations(sources) == []


@pytest.mark.parametrize("module,source,expected", [
    ("semproxy.data.cache", "from ..search import runner\n",
     "semproxy.data.cache:1 imports semproxy.search (semproxy.search is above semproxy.data)"),
    ("semproxy.models.heads", "def f():\n    import semproxy.train\n",
     "semproxy.models.heads:2 imports semproxy.train (semproxy.train is above semproxy.models)"),
    ("semproxy.losses", "from .metrics import knn\n",
     "semproxy.losses:1 imports semproxy.metrics (semproxy.metrics is beside semproxy.losses)"),
])
def test_an_upward_or_sideways_import_is_caught(module, source, expected):
    problems = violations({module: (source, False)})
    assert len(problems) == 1 and problems[0].startswith(expected), problems


def test_a_downward_import_and_an_executable_pass():
    assert violations({"semproxy.search.runner": ("from ..models import build_model\n", False),
                       "semproxy.data.__main__": ("from semproxy.cli.data import main\n", False)}) == []


@pytest.mark.parametrize("command", ["semproxy.cli.tune", "semproxy.cli.train", "semproxy.cli.evaluate",
                                     "semproxy.cli.data", "semproxy.cli.params"])
def test_every_command_answers_help(command, capsys):
    import importlib

    with pytest.raises(SystemExit) as exit_:
        importlib.import_module(command).main(["--help"])
    assert exit_.value.code == 0 and "usage:" in capsys.readouterr().out


def test_python_dash_m_entry_points_still_run():
    """``python -m semproxy.train`` (a package's __main__ since the commands moved to semproxy.cli)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "semproxy.train", "--help"], capture_output=True, text=True,
                          cwd=PACKAGE.parent, timeout=120)
    assert done.returncode == 0 and "python -m semproxy.train" in done.stdout, done.stderr[-2000:]
