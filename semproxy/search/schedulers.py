"""The trial schedulers a search can use, by name, and keeping their state across a resume.

:data:`SCHEDULERS` maps ``SearchSettings.scheduler`` names to factories; adding one is a
registration. Tune saves no scheduler state (ray#30838): after a restore ASHA's rungs would be empty
and resumed trials judged against nothing. :class:`SchedulerStateCallback` saves a scheduler through
its own ``save``/``restore`` with each experiment checkpoint (Tune checkpoints callback state).

- ``asha``: asynchronous successive halving (Li et al. 2020) on validation MAP@R.
- ``median``: the median stopping rule (Golovin et al. 2017, Google Vizier): a trial whose best
  value by epoch t is below the median of the other trials' running means at t is stopped.
- ``fifo``: every trial runs to the end.
"""
from __future__ import annotations

import collections
import os
import pickle
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ray.tune import Callback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule, TrialScheduler

from .settings import SearchSettings

__all__ = ["SCHEDULERS", "register_scheduler", "build_scheduler", "SchedulerStateCallback",
           "ResumableMedianStoppingRule"]

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
    return ASHAScheduler(time_attr="training_iteration", metric=metric, mode=mode, max_t=settings.max_epochs,
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


class SchedulerStateCallback(Callback):
    """Saves a scheduler's state with every experiment checkpoint and restores it on resume.

    Uses the scheduler's public ``save``/``restore`` (a file), carried as bytes in the callback state.
    """

    def __init__(self, scheduler: TrialScheduler) -> None:
        self.scheduler = scheduler

    def get_state(self) -> Optional[dict[str, Any]]:
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
