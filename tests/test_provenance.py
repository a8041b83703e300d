"""The command line a run records and prints to resume it (``command_line``), as the user would type it again.

Each case starts a real Python process the way a user does (a script, ``python -m`` of a package or of
a module), since ``sys.argv[0]`` and ``__main__.__spec__`` are what the interpreter sets for each.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PRINT = "from semproxy.provenance import command_line\nprint(command_line(drop=('--resume',)))\n"


def _typed_again(tmp_path: Path, files: dict[str, str], argv: list[str]) -> str:
    """What ``command_line`` says in a process started as ``python ARGV...`` in ``tmp_path`` holding ``files``."""
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    done = subprocess.run([sys.executable, *argv], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize("files,program", [
    ({"pkg/__init__.py": "", "pkg/train/__init__.py": "", "pkg/train/__main__.py": PRINT}, ["-m", "pkg.train"]),
    ({"pkg/__init__.py": "", "pkg/evaluate.py": PRINT}, ["-m", "pkg.evaluate"]),  # a module, not a package
    ({"tune.py": PRINT}, ["tune.py"]),                                           # a script
])
def test_the_command_is_given_back_as_it_was_typed_less_what_is_dropped(tmp_path, files, program):
    said = _typed_again(tmp_path, files, [*program, "--out", "runs/a b", "--resume", "--epochs", "2"])
    assert said == " ".join(["python", *program, "--out", "'runs/a b'", "--epochs", "2"])

