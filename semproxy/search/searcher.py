"""The searchers a search can use, by name, and the one Optuna adapter they share.

ASHA (or any scheduler) stops weak trials early; Ray's OptunaSearch would tell Optuna such a trial
COMPLETED with its low early value, which biases TPE. :class:`PruningAwareOptunaSearch` tells Optuna
PRUNED instead (Optuna then uses the trial's last intermediate value, as for its own pruners).
Searchers differ only in their Optuna sampler: :data:`SAMPLERS` maps ``SearchSettings.searcher``
names to samplers, so adding one is a registration.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Optional

import optuna
from ray.tune.search.optuna import OptunaSearch

from .ray_compat import is_completed, mark_completed, optuna_study, optuna_trial

__all__ = ["PruningAwareOptunaSearch", "SAMPLERS", "register_sampler", "make_sampler", "build_searcher"]

SAMPLERS: dict[str, Callable[[int], optuna.samplers.BaseSampler]] = {}


def register_sampler(name: str) -> Callable:
    """Register a function ``seed -> optuna sampler`` under ``name`` (a ``searcher`` setting's value)."""
    def register(factory: Callable[[int], optuna.samplers.BaseSampler]) -> Callable:
        SAMPLERS[name] = factory
        return factory
    return register


@register_sampler("tpe")
def _tpe(seed: int) -> optuna.samplers.TPESampler:
    """TPE, seeded, multivariate and grouped (conditional parameters form their own groups)."""
    with warnings.catch_warnings():  # multivariate and group are marked experimental, and are what we want
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)


@register_sampler("random")
def _random(seed: int) -> optuna.samplers.RandomSampler:
    """Uniform random sampling of the space, seeded (the baseline TPE has to beat)."""
    return optuna.samplers.RandomSampler(seed=seed)


def make_sampler(seed: int, name: str = "tpe") -> optuna.samplers.BaseSampler:
    return SAMPLERS[name](seed)


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
        if not stopped_early or is_completed(self, trial_id):
            return super().on_trial_complete(trial_id, result, error)
        trial = optuna_trial(self, trial_id)
        if self.metric in result:
            # Tune skips on_trial_result for the result that made the scheduler stop the trial;
            # without it Optuna would know nothing of where the trial stood. (A reported step is ignored.)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                trial.report(result[self.metric], result["training_iteration"])
        optuna_study(self).tell(trial, state=optuna.trial.TrialState.PRUNED)
        mark_completed(self, trial_id)
        return None


def build_searcher(define_by_run: Callable, *, name: str, seed: int, metric: str, mode: str, max_t: int,
                   starts: Optional[list[dict[str, Any]]]) -> PruningAwareOptunaSearch:
    """The searcher ``name`` (a key of :data:`SAMPLERS`) over a define-by-run space."""
    return PruningAwareOptunaSearch(define_by_run, metric=metric, mode=mode, points_to_evaluate=starts or None,
                                    sampler=make_sampler(seed, name), max_t=max_t)
