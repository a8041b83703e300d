"""Every use of Ray Tune's (and its Optuna searcher's) private attributes, in one place.

semproxy pins Ray to 2.60 (pyproject); ``tests/test_ray_compat.py`` checks that each attribute used
here exists in the installed version, so an upgrade that moves one fails there, by name, rather
than deep inside a search. Nothing outside this module touches a private Ray attribute.
"""
from __future__ import annotations

from typing import Any, Optional

from ray.tune.schedulers import AsyncHyperBandScheduler
from ray.tune.search.optuna import OptunaSearch

__all__ = ["SUPPORTED_RAY", "asha_milestones", "asha_rungs", "asha_cutoff", "optuna_trial", "optuna_study",
           "is_completed", "mark_completed"]

#: The Ray release series these accessors were written against.
SUPPORTED_RAY = "2.60."


def asha_rungs(scheduler: AsyncHyperBandScheduler) -> dict[int, dict[str, float]]:
    """Milestone -> {trial id: recorded metric}, as ASHA compares it (higher is better), all brackets."""
    out: dict[int, dict[str, float]] = {}
    for bracket in scheduler._brackets:
        for milestone, recorded in bracket._rungs:
            out.setdefault(int(milestone), {}).update(recorded)
    return out


def asha_cutoff(scheduler: AsyncHyperBandScheduler, recorded: dict[str, float]) -> Optional[float]:
    """The cut-off Ray's ASHA (its first bracket) applies at a rung holding ``recorded``; None when empty.

    A trial reaching the rung is stopped when its value (higher is better) is below it.
    """
    cutoff = scheduler._brackets[0].cutoff(recorded)
    return None if cutoff is None else float(cutoff)


def asha_milestones(max_t: int, grace_period: int, reduction_factor: int) -> list[int]:
    """The epochs at which Ray's ASHA (one bracket) compares trials, from Ray's own construction."""
    scheduler = AsyncHyperBandScheduler(time_attr="training_iteration", metric="m", mode="max", max_t=max_t,
                                        grace_period=grace_period, reduction_factor=reduction_factor)
    return sorted(asha_rungs(scheduler))


def optuna_trial(searcher: OptunaSearch, trial_id: str) -> Any:
    """The Optuna trial (``optuna.Trial``) that a Tune trial is running."""
    return searcher._ot_trials[trial_id]


def forget_trial(searcher: OptunaSearch, trial_id: str) -> None:
    """Drop the Optuna trial a Tune trial was given, so that the next ``suggest`` asks for a new one."""
    del searcher._ot_trials[trial_id]


def optuna_study(searcher: OptunaSearch) -> Any:
    """The searcher's Optuna study."""
    return searcher._ot_study


def is_completed(searcher: OptunaSearch, trial_id: str) -> bool:
    """Whether the searcher has already told Optuna how this trial ended."""
    return trial_id in searcher._completed_trials


def mark_completed(searcher: OptunaSearch, trial_id: str) -> None:
    """Record that Optuna has been told how this trial ended (so Ray does not tell it again)."""
    searcher._completed_trials.add(trial_id)

