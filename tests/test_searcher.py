"""Schedulers keep their state across a resume; searchers are seeded; Optuna hears PRUNED for stopped trials."""
from __future__ import annotations

import pickle
from types import SimpleNamespace

import optuna
import pytest

from semproxy.search.ray_compat import optuna_study
from semproxy.search.schedulers import build_scheduler
from semproxy.search.searcher import SAMPLERS, make_sampler
from semproxy.search.settings import SearchSettings


def _feed(scheduler, trials, values, epochs):
    """Report ``values`` for up to ``epochs`` epochs of stand-in trials (each until it is stopped);
    the scheduler's decisions."""
    decisions = []
    for trial, value in zip(trials, values):
        scheduler.on_trial_add(None, trial)
        for epoch in range(1, epochs + 1):
            decisions.append(scheduler.on_trial_result(None, trial, {"training_iteration": epoch,
                                                                     "val_map_at_r": value}))
            if decisions[-1] == "STOP":
                break
    return decisions


@pytest.mark.parametrize("name", ["asha", "median"])
def test_a_restored_scheduler_decides_as_the_one_saved(name):
    settings = SearchSettings(scheduler=name, max_epochs=9, grace_period=1, reduction_factor=3)
    scheduler, callbacks = build_scheduler(settings, "val_map_at_r", "max")
    assert len(callbacks) == 1  # the state callback that Tune checkpoints with the experiment
    assert set(_feed(scheduler, [SimpleNamespace(trial_id=t, config={}) for t in "abc"], (0.5, 0.6, 0.7), 2)) \
        == {"CONTINUE"}
    state = pickle.loads(pickle.dumps(callbacks[0].get_state()))  # Tune pickles callback states

    late = SimpleNamespace(trial_id="late", config={})
    fresh, fresh_callbacks = build_scheduler(settings, "val_map_at_r", "max")
    assert _feed(fresh, [late], (0.1,), 2)[-1] == "CONTINUE"  # without history nothing to compare with
    restored, restored_callbacks = build_scheduler(settings, "val_map_at_r", "max")
    restored_callbacks[0].set_state(state)
    assert _feed(restored, [SimpleNamespace(trial_id="late", config={})], (0.1,), 2)[-1] == "STOP"


def test_fifo_keeps_no_state():
    scheduler, callbacks = build_scheduler(SearchSettings(scheduler="fifo"), "val_map_at_r", "max")
    assert callbacks == [] and type(scheduler).__name__ == "FIFOScheduler"


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_samplers_are_seeded(name):
    def first(seed):
        study = optuna.create_study(sampler=make_sampler(seed, name))
        return [study.ask().suggest_float("lr", 1e-4, 1e-1, log=True) for _ in range(3)]

    assert first(7) == first(7) != first(8)


def _searcher(max_t: int):
    from semproxy.search.searcher import PruningAwareOptunaSearch

    def space(trial):
        trial.suggest_float("lr", 1e-3, 1e-1, log=True)

    searcher = PruningAwareOptunaSearch(space, metric="val_map_at_r", mode="max", sampler=make_sampler(0), max_t=max_t)
    searcher.set_search_properties(None, None, {})
    return searcher


def test_a_trial_that_ran_its_own_epochs_is_complete_and_one_stopped_before_is_pruned():
    searcher = _searcher(max_t=6)
    for trial_id, config, iteration in [("full", {}, 6), ("asha", {}, 2),
                                        ("short", {"epochs": 3}, 3), ("short-stopped", {"epochs": 3}, 2)]:
        searcher.suggest(trial_id)
        searcher.on_trial_complete(trial_id, {"val_map_at_r": 0.5, "training_iteration": iteration, "config": config})
    states = [t.state.name for t in optuna_study(searcher).trials]
    # a trial whose sampled 'epochs' is below max_t finished when it ran them all: COMPLETE, not PRUNED
    assert states == ["COMPLETE", "PRUNED", "COMPLETE", "PRUNED"]
