"""Every epoch each trial reported, as the driver received it: :data:`~.results.HISTORY_FILE`.

Tune's own per-trial ``progress.csv`` can lose epochs: when a trial restarts from its checkpoint,
Tune copies the storage copy of the file over the driver's (Ray 2.60's
``CSVLoggerCallback._restore_from_remote``), and that copy dates from the last sync, possibly before
the epochs reported just ahead of the failure. The report's curves and a trial's best epoch would
then miss them. The driver saw every result in order: this callback keeps the few fields the
run's readers need, carries them across driver restarts in its callback state, and writes them,
as JSON, into the experiment folder Tune syncs to the run directory at each snapshot.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from ray.tune import Callback

from ..atomic import write_text_atomic
from .results import HISTORY_FIELDS, HISTORY_FILE

__all__ = ["TrialHistoryCallback"]


class TrialHistoryCallback(Callback):
    """Keeps ``{trial id: {epoch: {field: value}}}`` for :data:`~.results.HISTORY_FIELDS`; a restarted
    trial's repeated epoch replaces the earlier report of it."""

    def __init__(self) -> None:
        self.epochs: dict[str, dict[str, dict[str, Any]]] = {}
        self.folder: Optional[str] = None  # the driver's copy of the experiment folder, once a trial reports
        self.unwritten = False  # results since the file was last written

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        self.folder = trial.local_experiment_path
        kept = {key: result[key] for key in HISTORY_FIELDS if result.get(key) is not None}
        if "training_iteration" in kept:
            self.epochs.setdefault(trial.trial_id, {})[str(int(kept["training_iteration"]))] = kept
            self.unwritten = True

    def get_state(self) -> Optional[dict[str, Any]]:
        if self.folder and self.unwritten:
            write_text_atomic(Path(self.folder) / HISTORY_FILE, json.dumps({"trials": self.epochs}) + "\n")
            self.unwritten = False
        return {"epochs": self.epochs}

    def set_state(self, state: dict[str, Any]) -> None:
        self.epochs = state.get("epochs", {})
