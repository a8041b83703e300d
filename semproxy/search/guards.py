"""Ending a search cleanly, and resumably, before the disk under its run folder fills up.

A full disk mid-search cuts Tune's experiment state short and fails every later trial at its
first checkpoint. :class:`FreeSpaceGuard` stops the search while a margin is left, the way Ctrl-C
does (Tune saves its state and leaves unfinished trials to resume; a ``Stopper`` would instead
end them as finished and close the searcher), so ``--resume`` continues exactly once space is freed.
"""
from __future__ import annotations

import logging
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback

__all__ = ["FreeSpaceGuard"]

logger = logging.getLogger(__name__)


class FreeSpaceGuard(Callback):
    """Interrupts the search once ``path``'s filesystem has less than ``min_free`` bytes free.

    It raises SIGUSR1 in the driver, which Tune handles as it does Ctrl-C (where Tune runs in
    the main thread and so installed that handler; elsewhere it only logs a warning).

    Args:
        path: the run folder (or any existing folder on the same filesystem).
        min_free: the margin to keep: a few checkpoints plus Tune's records.
        every: seconds between two looks at the free space.
    """

    def __init__(self, path: str | Path, min_free: int, every: float = 1.0) -> None:
        self.path, self.min_free, self.every = Path(path), int(min_free), every
        self._last = 0.0
        self._raised = False

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        now = time.monotonic()
        if self._raised or now - self._last < self.every:
            return
        self._last = now
        free = shutil.disk_usage(self.path).free
        if free >= self.min_free:
            return
        self._raised = True
        if callable(signal.getsignal(signal.SIGUSR1)):
            signal.raise_signal(signal.SIGUSR1)
        else:
            logger.warning("only %d bytes free under %s; stop the search (Ctrl-C) and free some space", free, self.path)

    def __getstate__(self) -> dict[str, Any]:  # saved with the experiment: a restored guard looks afresh
        return {**self.__dict__, "_last": 0.0, "_raised": False}
