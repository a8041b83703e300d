"""One process at a time in a run folder: a lock held while a search, a comparison or a final training
reads and writes there.

Two drivers in one run folder damage it beyond resuming: both write Tune's experiment state and the
trials' files, and both report the same trials to the Optuna study. The lock is ``fcntl.flock`` on
:data:`LOCK_FILE` inside the folder, which the kernel releases when its holder exits however it
ends (SIGKILL included), so a lock never outlives its process and never blocks a resume. The file
names its holder (PID and host) for the refusal. A folder that holds nothing else when the lock is
released (the work was refused before it wrote anything) is left as it was found.

Network filesystems: NFSv4 (and NFSv3 with its lock manager) and Lustre mounted with ``flock`` lock
across hosts; a mount with ``nolock``, ``local_lock=flock`` or Lustre's ``localflock`` locks per host
only, so drivers on two hosts are not kept apart there. Where the filesystem has no ``flock`` at all
the run goes on unlocked, with a warning.
"""
from __future__ import annotations

import fcntl
import os
import socket
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from .errors import ConfigError, RunInUseError

__all__ = ["LOCK_FILE", "run_lock"]

LOCK_FILE = ".semproxy.lock"


def _holder(handle: IO[str]) -> str:
    handle.seek(0)
    return handle.read().strip() or "another process"


def _acquire(path: Path, folder: Path, what: str) -> IO[str]:
    """The open, locked lock file; the file must still be the one at ``path`` once locked (a releasing
    holder may have removed it meanwhile: then lock the new one)."""
    while True:
        try:
            handle = open(path, "a+", encoding="utf-8")
        except FileNotFoundError:  # a releasing holder removed the folder it had created: make it again
            folder.mkdir(parents=True, exist_ok=True)
            continue
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(handle)
            handle.close()
            raise RunInUseError(f"{folder} is in use by {holder}: one {what} at a time in a run folder; wait for it "
                                f"to end (or stop it), or choose another folder") from None
        except OSError as error:
            warnings.warn(f"{folder}: cannot lock the run folder ({error.strerror}); make sure no other process "
                          f"writes there", stacklevel=4)
            return handle
        try:
            if os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino:
                return handle
        except FileNotFoundError:
            pass
        handle.close()


@contextmanager
def run_lock(folder: Path, what: str) -> Iterator[None]:
    """Hold ``folder``'s lock (creating the folder) for the block; :class:`RunInUseError` naming the holder
    when another process holds it. ``what`` names the work for that message (``search``, ...)."""
    created = [path for path in (folder, *folder.parents) if not path.exists()]  # deepest first
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # a file in the way, a read-only or full filesystem, a name too long
        raise ConfigError(f"{folder}: cannot make the run folder ({error.strerror or type(error).__name__})") from None
    path = folder / LOCK_FILE
    handle = _acquire(path, folder, what)
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"PID {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        yield
    finally:
        if [entry.name for entry in folder.iterdir()] == [LOCK_FILE]:  # nothing was written: leave no trace
            path.unlink()
            for made in created:
                try:
                    made.rmdir()
                except OSError:  # something else was written there meanwhile
                    break
        handle.close()  # releases the lock
