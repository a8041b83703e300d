"""Optuna TPE and ASHA, joined so that neither misleads the other and both survive a resume.

- ASHA stops weak trials early; Ray's OptunaSearch would tell Optuna such a trial COMPLETED with its
  low early value, which biases TPE. :class:`PruningAwareOptunaSearch` tells Optuna PRUNED instead
  (Optuna then uses the trial's last intermediate value, as for its own pruners).
- Tune does not save scheduler state (ray#30838): after a restore ASHA's rungs would be empty and
  resumed trials judged against nothing. :class:`AshaStateCallback` holds the scheduler and saves
  and restores its rungs with the experiment checkpoint (Tune checkpoints callback state).
"""
from __future__ import annotations

import warnings
from typing import Any, Optional

import optuna
from ray.tune import Callback
from ray.tune.schedulers import AsyncHyperBandScheduler
from ray.tune.search.optuna import OptunaSearch

__all__ = ["PruningAwareOptunaSearch", "AshaStateCallback", "make_sampler"]


def make_sampler(seed: int) -> optuna.samplers.TPESampler:
    """TPE, seeded, multivariate and grouped (conditional parameters form their own groups)."""
    with warnings.catch_warnings():  # multivariate and group are marked experimental, and are what we want
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)


class PruningAwareOptunaSearch(OptunaSearch):
    """OptunaSearch that records trials stopped before their last epoch as PRUNED.

    A trial's last epoch is ``max_t``, or its own ``epochs`` where the space samples that.
    """

    def __init__(self, *args, max_t: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._max_t = max_t

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False) -> None:
        # A trial's own length is its sampled 'epochs' where the space samples it, else max_t.
        planned = ((result or {}).get("config") or {}).get("epochs", self._max_t)
        stopped_early = (not error and result is not None
                         and result.get("training_iteration", planned) < planned)
        if not stopped_early or trial_id in self._completed_trials:
            return super().on_trial_complete(trial_id, result, error)
        trial = self._ot_trials[trial_id]
        if self.metric in result:
            # Tune skips on_trial_result for the result that made ASHA stop the trial; without it
            # Optuna would know nothing of where the trial stood. (A step reported already is ignored.)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                trial.report(result[self.metric], result["training_iteration"])
        self._ot_study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        self._completed_trials.add(trial_id)
        return None


class AshaStateCallback(Callback):
    """Saves ASHA's rungs (the recorded metric per trial and milestone) across experiment restores."""

    def __init__(self, scheduler: AsyncHyperBandScheduler) -> None:
        self.scheduler = scheduler

    def get_state(self) -> Optional[dict[str, Any]]:
        return {
            "rungs": [[(milestone, dict(recorded)) for milestone, recorded in bracket._rungs]
                      for bracket in self.scheduler._brackets],
            "num_stopped": self.scheduler._num_stopped,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        for bracket, rungs in zip(self.scheduler._brackets, state["rungs"]):
            saved = dict((milestone, recorded) for milestone, recorded in rungs)
            for milestone, recorded in bracket._rungs:
                recorded.clear()
                recorded.update(saved.get(milestone, {}))
        self.scheduler._num_stopped = state["num_stopped"]

    def rungs(self) -> dict[int, dict[str, float]]:
        """Milestone -> {trial id: recorded metric} (the metric as ASHA compares it: higher is better)."""
        out: dict[int, dict[str, float]] = {}
        for bracket in self.scheduler._brackets:
            for milestone, recorded in bracket._rungs:
                out.setdefault(int(milestone), {}).update(recorded)
        return out
