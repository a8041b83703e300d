"""Files written whole or not at all: a temporary file beside the target, renamed into place.

A full disk, a crash or a kill mid-write leaves the previous file intact and no temporary file
behind; readers never see half a file.

Files written here get the permissions a plain ``open(path, "w")`` would give them, not the 0600 of
``tempfile.mkstemp``: a new file ``0o666 & ~umask``, a replaced file its previous mode. Run folders
and the image cache live on storage that others read.
"""
from __future__ import annotations

import json
import os
import stat
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

__all__ = ["replacing", "write_text_atomic", "write_json_atomic", "current_umask", "file_mode"]

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where the system says it (Linux 4.7+:
    ``/proc/self/status``); elsewhere set and restored at once, under a lock."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode(path: str | Path) -> int:
    """The permission bits ``open(path, "w")`` would leave: those of the file already at ``path``
    (followed through a link), else ``0o666`` less the umask."""
    try:
        info = os.stat(path)
        if stat.S_ISREG(info.st_mode):
            return stat.S_IMODE(info.st_mode)
    except OSError:
        pass
    return 0o666 & ~current_umask()


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """A temporary file beside ``path`` to write; renamed onto ``path`` when the block succeeds.

    On any failure (a full disk, Ctrl-C) the temporary file is removed and ``path`` left as it was.
    Before the rename the temporary file gets :func:`file_mode` of ``path`` (a new file
    ``0o666 & ~umask``, a replaced one keeps its mode), so the published file has the mode a plain
    ``open()`` would give it; while it is written it is private (0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = file_mode(path)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(handle)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, mode)  # only now: a read-only mode kept from the old file must not stop the writing
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically, creating its folder; returns the path."""
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | Path, payload: Any) -> Path:
    """Write ``payload`` as indented JSON atomically (numpy and torch scalars as floats)."""
    return write_text_atomic(path, json.dumps(payload, indent=2, default=float) + "\n")
