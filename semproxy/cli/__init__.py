"""The command lines: ``tune.py`` (search, export, report), ``python -m semproxy.train`` (final
training), ``python -m semproxy.evaluate``, ``python -m semproxy.data``, ``python -m semproxy.models``
(parameter counts); also installed as ``semproxy-tune``, ``semproxy-train`` and so on.

What they share lives here. A usage error is one line naming the flag (argparse's default adds the
whole usage above it). :func:`run_command` is the one place an error becomes an exit status: a
:class:`~semproxy.errors.SemproxyError` prints ``error: <its one line>`` and exits with its
``exit_code`` (2: bad input); Ctrl-C prints how to go on and exits 130; any other exception is a bug
and keeps its traceback.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Callable, NoReturn

from ..errors import INTERRUPTED, SemproxyError
from ..provenance import command_line

__all__ = ["OneLineParser", "program", "describe", "run_command", "command_line", "INTERRUPTED"]

#: How the installed commands (pyproject.toml's [project.scripts]) begin.
SCRIPT_PREFIX = "semproxy-"


def program(typed: str) -> str:
    """This command's name for its usage line and hints: the installed command as it ran (``semproxy-params``,
    whose ``sys.argv[0]`` is its path), else ``typed``, how one types it from a checkout (``python -m
    semproxy.models``, ``python tune.py``)."""
    name = Path(sys.argv[0]).name.removesuffix(".exe") if sys.argv and sys.argv[0] else ""
    return name if name.startswith(SCRIPT_PREFIX) else typed


class OneLineParser(argparse.ArgumentParser):
    """argparse, with usage errors on one line: ``error: argument --x: ... (see PROG --help)``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def describe(doc: str) -> str:
    """A parser's description: the module docstring's first line less its ``: ``python -m ...``.`` ending (the
    usage line says how the command is run, by whichever name ran it)."""
    first = doc.strip().splitlines()[0]
    return re.sub(r":\s*``[^`]*``\.?$", ".", first)


def run_command(command: Callable[[], int], interrupted: str) -> int:
    """Run ``command`` and turn what the user can act on into an exit status.

    Args:
        command: the command's work; returns its exit status.
        interrupted: what to do after Ctrl-C (e.g. the command that resumes), printed after
            ``interrupted: ``.
    """
    try:
        return command()
    except SemproxyError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"\ninterrupted: {interrupted}", file=sys.stderr)
        return INTERRUPTED

