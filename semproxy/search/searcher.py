"""The searchers a search can use, by name, and the one Optuna adapter they share.

ASHA (or any scheduler) stops weak trials early; Ray's OptunaSearch would tell Optuna such a trial
COMPLETED with its low early value, which biases TPE. :class:`PruningAwareOptunaSearch` tells Optuna
PRUNED instead (Optuna then uses the trial's last intermediate value, as for its own pruners). A trial
that ran all its epochs is told its best epoch's validation MAP@R, not its last epoch's: the value a
search ranks trials by, for the epoch count ``export`` writes (semproxy.search.results).
Searchers differ only in their Optuna sampler: :data:`SAMPLERS` maps ``SearchSettings.searcher``
names to samplers, so adding one is a registration.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Optional

import optuna
from ray.tune.search.optuna import OptunaSearch

from ..metric_names import BEST_OBJECTIVE, OBJECTIVE
from .objectives import COSTS, Constraint, Objective
from .ray_compat import forget_trial, is_completed, mark_completed, optuna_study, optuna_trial

__all__ = ["PruningAwareOptunaSearch", "SAMPLERS", "register_sampler", "make_sampler", "build_searcher"]

SamplerFactory = Callable[[int], optuna.samplers.BaseSampler]
SAMPLERS: dict[str, SamplerFactory] = {}
#: Draws a trial may take to find a configuration the study has not run; past them a repeat is run.
MAX_DRAWS = 20
#: The states of Optuna trials whose configurations are taken: run or running. (Queued starting points
#: hold no parameters until asked for, and are asked for before any draw.)
TAKEN = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.RUNNING)


def register_sampler(name: str) -> Callable:
    """Register ``seed -> optuna sampler`` under ``name`` (a ``searcher`` setting)."""
    def register(factory: SamplerFactory) -> SamplerFactory:
        SAMPLERS[name] = factory
        return factory
    return register


@register_sampler("tpe")
def _tpe(seed: int) -> optuna.samplers.TPESampler:
    """TPE, seeded, multivariate and grouped (conditional parameters form their own groups); with
    several objectives Optuna's TPE models the objective vector, and it avoids trials' broken constraints."""
    with warnings.catch_warnings():  # multivariate and group are marked experimental, and are what we want
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)


@register_sampler("random")
def _random(seed: int) -> optuna.samplers.RandomSampler:
    """Uniform random sampling of the space, seeded (the baseline TPE has to beat; ignores constraints)."""
    return optuna.samplers.RandomSampler(seed=seed)


def make_sampler(seed: int, name: str = "tpe") -> optuna.samplers.BaseSampler:
    return SAMPLERS[name](seed)


class PruningAwareOptunaSearch(OptunaSearch):
    """OptunaSearch that records trials stopped before their last epoch as PRUNED, and what they cost.

    A trial's last epoch is ``max_t``, or its own ``epochs`` where the space samples that. Each Optuna
    trial carries its Tune trial id and, when it ends, the epochs it ran, the epoch it was stopped at
    (if it was), its measured costs, its node and its constraint violations as user attributes, so
    the study database says what happened without Ray's files. With several objectives, a trial
    stopped early is PRUNED too: it ran fewer epochs than the others, so its values are not
    comparable, and it is not on the Pareto front (Optuna reports no intermediate values then).
    A trial's validation MAP@R, as Optuna's value and in constraints on it, is its best epoch's (the
    trainable reports it each epoch as ``BEST_OBJECTIVE``), beside its last epoch's costs; the
    intermediate values stay each epoch's own.
    """

    def __init__(self, *args, max_t: int, constraints: tuple[Constraint, ...] = (), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._max_t, self._constraints = max_t, tuple(constraints)

    def suggest(self, trial_id: str) -> Optional[dict]:
        """The next configuration: one the study has not run and is not running.

        A sampler can draw a configuration again: TPE in a discrete space, or a warm-started study
        whose seeded random start-up draws what the earlier study drew with the same seed (and ran,
        and now starts from). Such a draw is told to Optuna as FAIL (``duplicate_of``: the trial it
        repeats; samplers ignore failed trials) and the sampler draws again, up to :data:`MAX_DRAWS`
        times; a space with no configuration left runs the repeat.
        """
        for draw in range(MAX_DRAWS):
            config = super().suggest(trial_id)
            if config is None:
                return None
            trial = optuna_trial(self, trial_id)
            earlier = self._earlier_with_params(trial)
            if earlier is None or draw == MAX_DRAWS - 1:
                break
            trial.set_user_attr("duplicate_of", earlier)
            optuna_study(self).tell(trial, state=optuna.trial.TrialState.FAIL)
            forget_trial(self, trial_id)
        trial.set_user_attr("tune_trial_id", trial_id)
        return config

    def _earlier_with_params(self, trial: Any) -> Optional[int]:
        """The number of another trial of the study with exactly ``trial``'s parameters, if one is taken."""
        for other in optuna_study(self).get_trials(deepcopy=False, states=TAKEN):
            if other.number != trial.number and other.params == trial.params:
                return other.number
        return None

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        with warnings.catch_warnings():  # a trial restarted from its checkpoint reports an epoch again:
            warnings.filterwarnings("ignore", message=".*is already reported")  # Optuna keeps the first
            super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False) -> None:
        # A trial's own length is its sampled 'epochs' where the space samples it, else max_t.
        planned = ((result or {}).get("config") or {}).get("epochs", self._max_t)
        stopped_early = (not error and result is not None
                         and result.get("training_iteration", planned) < planned)
        if is_completed(self, trial_id):
            return super().on_trial_complete(trial_id, result, error)
        trial = optuna_trial(self, trial_id)
        if result and isinstance(self.metric, str) and self.metric in result:
            # Tune calls on_trial_result for every result but a trial's last (the one that made the
            # scheduler stop it, or its final epoch): report it too, so the study holds every epoch.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*is already reported")  # as in on_trial_result
                trial.report(result[self.metric], result["training_iteration"])
        if result and BEST_OBJECTIVE in result:
            result = {**result, OBJECTIVE: result[BEST_OBJECTIVE]}  # its value, and constraints on it
        if result:
            self._record(trial, result, stopped_early)
        if not stopped_early:
            return super().on_trial_complete(trial_id, result, error)
        optuna_study(self).tell(trial, state=optuna.trial.TrialState.PRUNED)
        mark_completed(self, trial_id)
        return None

    def _record(self, trial: Any, result: dict, stopped_early: bool) -> None:
        """The trial's outcome as user attributes of its Optuna trial."""
        attrs = {key: result[key] for key in (*COSTS, "node_id") if key in result}
        attrs["epochs"] = result.get("training_iteration")
        if stopped_early:
            attrs["stopped_at_epoch"] = result.get("training_iteration")
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        for constraint in self._constraints:  # > 0: broken; Optuna's samplers and best_trials read them
            trial.set_constraint(str(constraint), constraint.violation(float(result.get(constraint.metric, math.inf))))


def build_searcher(define_by_run: Callable, *, name: str, seed: int, objectives: tuple[Objective, ...],
                   max_t: int, starts: Optional[list[dict[str, Any]]], storage: Any = None,
                   study_name: Optional[str] = None,
                   constraints: tuple[Constraint, ...] = ()) -> PruningAwareOptunaSearch:
    """The searcher ``name`` (a key of :data:`SAMPLERS`) over a define-by-run space.

    One objective (validation MAP@R) makes a single-objective study; more make Optuna optimise the
    vector (``metric`` and ``mode`` as lists). The study lives in ``storage`` (an Optuna storage)
    under ``study_name``; in memory when None.
    """
    single = len(objectives) == 1
    metric = objectives[0].metric if single else [o.metric for o in objectives]
    mode = objectives[0].mode if single else [o.mode for o in objectives]
    sampler = make_sampler(seed, name)
    return PruningAwareOptunaSearch(define_by_run, metric=metric, mode=mode, points_to_evaluate=starts or None,
                                    sampler=sampler, max_t=max_t, storage=storage, study_name=study_name,
                                    constraints=constraints)
