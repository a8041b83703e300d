"""The trial schedulers a search can use, by name, and keeping their state across a resume.

:data:`SCHEDULERS` maps ``SearchSettings.scheduler`` names to factories; adding one is a
registration. Tune saves no scheduler state (ray#30838): after a restore ASHA's rungs would be empty
and resumed trials judged against nothing. :class:`SchedulerStateCallback` saves a scheduler through
its own ``save``/``restore`` with each experiment checkpoint (Tune checkpoints callback state).

- ``asha``: asynchronous successive halving (Li et al. 2020) on validation MAP@R. Each decision
  it takes at a rung (trial, value, the cut-off it applied, stopped or not) is kept in its state and
  written as plain JSON beside it (``scheduler-decisions.json``) for the report.
- ``median``: the median stopping rule (Golovin et al. 2017, Google Vizier): a trial whose best
  value by epoch t is below the median of the other trials' running means at t is stopped.
- ``fifo``: every trial runs to the end.
"""
from __future__ import annotations

import collections
import json
import os
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from ray.tune import Callback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule, TrialScheduler

from ..atomic import write_text_atomic
from .ray_compat import asha_cutoff, asha_rungs
from .results import DECISIONS_FILE
from .settings import SearchSettings

__all__ = ["SCHEDULERS", "register_scheduler", "build_scheduler", "SchedulerStateCallback",
           "RecordingASHA", "ResumableMedianStoppingRule"]

SchedulerFactory = Callable[[SearchSettings, str, str], TrialScheduler]
SCHEDULERS: dict[str, SchedulerFactory] = {}


def register_scheduler(name: str) -> Callable[[SchedulerFactory], SchedulerFactory]:
    """Register a factory ``(settings, metric, mode) -> TrialScheduler`` under ``name``."""
    def register(factory: SchedulerFactory) -> SchedulerFactory:
        SCHEDULERS[name] = factory
        return factory
    return register


@register_scheduler("asha")
def _asha(settings: SearchSettings, metric: str, mode: str) -> TrialScheduler:
    return RecordingASHA(time_attr="training_iteration", metric=metric, mode=mode, max_t=settings.max_epochs,
                         grace_period=settings.grace_period, reduction_factor=settings.reduction_factor)


@register_scheduler("median")
def _median(settings: SearchSettings, metric: str, mode: str) -> TrialScheduler:
    return ResumableMedianStoppingRule(time_attr="training_iteration", metric=metric, mode=mode,
                                       grace_period=settings.grace_period, min_samples_required=3)


@register_scheduler("fifo")
def _fifo(settings: SearchSettings, metric: str, mode: str) -> TrialScheduler:
    return FIFOScheduler()


def build_scheduler(settings: SearchSettings, metric: str, mode: str) -> tuple[TrialScheduler, list[Callback]]:
    """The scheduler the settings name, and the callback that keeps its state across a resume."""
    scheduler = SCHEDULERS[settings.scheduler](settings, metric, mode)
    saves_state = type(scheduler).save is not TrialScheduler.save
    return scheduler, [SchedulerStateCallback(scheduler)] if saves_state else []


class RecordingASHA(ASHAScheduler):
    """Ray's ASHA (one bracket) that logs every decision it takes, as ``decisions``, for the report.

    ASHA decides when a trial first reaches a rung: the trial is stopped when its value is below the
    cut-off, the ``1 - 1/reduction_factor`` quantile of the values recorded at that rung so far (so
    an early trial is judged against few others). Each entry: ``trial``, ``rung`` (the epoch),
    ``value``, ``cutoff`` (None: nothing to compare with), ``compared`` (values behind the cut-off)
    and ``stopped``. The log is part of ``save``/``restore``, so a resumed search keeps it.
    """

    def __init__(self, *args: Any, mode: str, **kwargs: Any) -> None:
        super().__init__(*args, mode=mode, **kwargs)
        self.decisions: list[dict[str, Any]] = []
        self.sign = -1.0 if mode == "min" else 1.0  # ASHA records values as higher-is-better

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        before = asha_rungs(self)
        action = super().on_trial_result(tune_controller, trial, result)
        for rung, recorded in sorted(asha_rungs(self).items()):
            if trial.trial_id in recorded and trial.trial_id not in before[rung]:
                cutoff = asha_cutoff(self, before[rung])
                self.decisions.append({
                    "trial": trial.trial_id, "rung": rung, "value": self.sign * recorded[trial.trial_id],
                    "cutoff": None if cutoff is None else self.sign * cutoff, "compared": len(before[rung]),
                    "stopped": action == TrialScheduler.STOP})
        return action

    def decision_log(self) -> dict[str, Any]:
        """What :data:`DECISIONS_FILE` holds: the scheduler, its rungs and its decisions in order."""
        return {"scheduler": "asha", "rungs": sorted(asha_rungs(self)), "decisions": self.decisions}


class SchedulerStateCallback(Callback):
    """Saves a scheduler's state with every experiment checkpoint and restores it on resume.

    Uses the scheduler's public ``save``/``restore`` (a file), carried as bytes in the callback state.
    A scheduler with a ``decision_log`` also has it written, as JSON, into the experiment folder
    Tune syncs to the run directory (``trial.local_experiment_path``), at the same moments.
    """

    def __init__(self, scheduler: TrialScheduler) -> None:
        self.scheduler = scheduler
        self.folder: Optional[str] = None  # the driver's copy of the experiment folder, once a trial starts

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        self.folder = trial.local_experiment_path

    def get_state(self) -> Optional[dict[str, Any]]:
        if self.folder and hasattr(self.scheduler, "decision_log"):
            write_text_atomic(Path(self.folder) / DECISIONS_FILE, json.dumps(self.scheduler.decision_log()) + "\n")
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "scheduler.pkl")
            self.scheduler.save(path)
            with open(path, "rb") as handle:
                return {"scheduler": type(self.scheduler).__name__, "state": handle.read()}

    def set_state(self, state: dict[str, Any]) -> None:
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "scheduler.pkl")
            with open(path, "wb") as handle:
                handle.write(state["state"])
            self.scheduler.restore(path)


@dataclass(frozen=True)
class _TrialKey:
    """A trial by id: what the median rule keys its history by, so that it survives a restore
    (Tune re-creates the Trial objects it would otherwise be keyed by)."""

    trial_id: str


class ResumableMedianStoppingRule(MedianStoppingRule):
    """Ray's median stopping rule, keyed by trial id and saved like ASHA (its own ``save``/``restore``).

    With too few other trials to compare against, a trial continues (Ray's rule would pause it to let
    pending trials catch up, stopping and restarting it for nothing when trials run in parallel).
    """

    def _on_insufficient_samples(self, tune_controller, trial, time: float) -> str:
        return TrialScheduler.CONTINUE

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        return super().on_trial_result(tune_controller, _TrialKey(trial.trial_id), result)

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        super().on_trial_complete(tune_controller, _TrialKey(trial.trial_id), result)

    def save(self, checkpoint_path: str) -> None:
        state = {k: (dict(v) if k in ("_results", "_last_pause") else v) for k, v in self.__dict__.items()}
        with open(checkpoint_path, "wb") as handle:
            pickle.dump(state, handle)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as handle:
            state = pickle.load(handle)
        state["_results"] = collections.defaultdict(list, state["_results"])
        state["_last_pause"] = collections.defaultdict(lambda: float("-inf"), state["_last_pause"])
        self.__dict__.update(state)
