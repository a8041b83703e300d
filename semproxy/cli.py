"""What every command line of semproxy shares: one-line usage errors and an honest Ctrl-C.

A usage error is one line naming the flag (argparse's default adds the whole usage above it) with
exit status 2; Ctrl-C ends a command with the shell's status 130 and a line saying how to go on,
never with a traceback and never with the status of a finished run.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from typing import Callable, NoReturn

__all__ = ["OneLineParser", "run_interruptible", "command_line", "INTERRUPTED"]

INTERRUPTED = 130  # the shell's exit status of a command stopped by Ctrl-C (128 + SIGINT)


class OneLineParser(argparse.ArgumentParser):
    """argparse, with usage errors on one line: ``error: argument --x: ... (see PROG --help)``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def run_interruptible(command: Callable[[], int], hint: str) -> int:
    """Run ``command``; Ctrl-C prints ``interrupted: <hint>`` and returns :data:`INTERRUPTED`."""
    try:
        return command()
    except KeyboardInterrupt:
        print(f"\ninterrupted: {hint}", file=sys.stderr)
        return INTERRUPTED


def command_line(drop: tuple[str, ...] = ()) -> str:
    """This process's command as one would type it again (``python tune.py ...``), less ``drop``."""
    argv = [a for a in sys.argv if a not in drop]
    prefix = ["python"] if argv and argv[0].endswith(".py") else []
    return " ".join(shlex.quote(a) for a in prefix + argv)
