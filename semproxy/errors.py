"""The errors a user can act on, and how their messages are kept to one line.

Every error that a bad input, file, setting or environment causes derives from
:class:`SemproxyError`. Its message is one line of at most :data:`MAX_MESSAGE` characters that names
the file, key or path and what was expected; the command lines print it as ``error: <message>`` and
exit with its ``exit_code`` (2: the input is wrong). Any other exception is a bug and keeps its
traceback. Values quoted in a message go through :func:`short`, so a message stays small whatever a
file holds (a YAML alias tree, a huge number).
"""
from __future__ import annotations

import difflib
import reprlib
from pathlib import Path
from typing import Any, ClassVar, Iterable

__all__ = ["MAX_MESSAGE", "INTERRUPTED", "SemproxyError", "ConfigError", "SearchError", "DatasetError", "BackboneError",
           "CheckpointError", "TrainingError", "RunInUseError", "one_line", "first_line", "short", "shown",
           "did_you_mean"]

#: Longest error message: with an ``error: `` prefix it still fits a 300-character line.
MAX_MESSAGE = 280
#: The exit status of a command stopped by Ctrl-C (128 + SIGINT, as the shell gives it).
INTERRUPTED = 130


def one_line(message: str, limit: int = MAX_MESSAGE) -> str:
    """``message`` on one line of at most ``limit`` characters, cut in the middle (its start names the
    file and key, its end what was expected)."""
    text = " ".join(message.splitlines())
    if len(text) <= limit:
        return text
    tail = limit // 3
    return f"{text[:limit - tail - 5]} ... {text[-tail:]}"


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type where it has none), bounded like ours; the last
    line where the message is a traceback (Ray wraps a worker's exception so), which names the error."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    return one_line(lines[-1].strip() if lines[0].startswith("Traceback (most recent call last)") else lines[0])


class _ShortRepr(reprlib.Repr):
    """reprlib's bounded repr, with a bounded int too (repr of a huge int is slow, then refused)."""

    def repr_int(self, x: int, level: int) -> str:
        return super().repr_int(x, level) if x.bit_length() <= 256 else f"<int of ~{x.bit_length() * 3 // 10} digits>"


_SHORT = _ShortRepr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong = 3, 60, 60, 40
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = _SHORT.maxfrozenset = 6


def short(value: Any) -> str:
    """A bounded repr of a user-given value for error messages (a YAML alias tree prints as ``[[[...]]]``)."""
    return _SHORT.repr(value)


def shown(path: str | Path) -> str:
    """``path`` relative to the working folder where it lies below it, as one would type it here (shorter
    messages)."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def did_you_mean(word: Any, choices: Iterable[str]) -> str:
    """`` (did you mean 'X'?)`` with the choice closest to a mistyped ``word``, or '' where none is close."""
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


class SemproxyError(Exception):
    """Something the user can fix: a one-line message, and the exit status the command lines give it."""

    exit_code: ClassVar[int] = 2

    def __init__(self, message: str) -> None:
        super().__init__(one_line(str(message)))


class ConfigError(SemproxyError):
    """A configuration value is unknown, of the wrong type, or out of range."""


class SearchError(ConfigError):
    """A search cannot be set up as asked (flags, resources, a run folder that is another search)."""


class DatasetError(SemproxyError):
    """A dataset root, list file, image or cache is missing, malformed or does not fit."""


class BackboneError(SemproxyError):
    """A backbone cannot be built or its weights loaded."""


class CheckpointError(SemproxyError):
    """A checkpoint is missing, unreadable, or made for another backbone or config."""


class RunInUseError(SemproxyError):
    """Another process is writing the run folder (a search, comparison or final training)."""


class TrainingError(SemproxyError):
    """Training itself failed in a way the settings explain (e.g. a non-finite loss): exit status 1."""

    exit_code: ClassVar[int] = 1
