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


def _discrete(trial):
    trial.suggest_categorical("x", [1, 2, 3])


def _continuous(trial):
    trial.suggest_float("lr", 1e-4, 1e-1, log=True)


def _raw_draws(space, n: int, seed: int, enqueue=()) -> list[dict]:
    """What the seeded sampler alone gives, without the searcher's check."""
    study = optuna.create_study(sampler=make_sampler(seed, "random"))
    for point in enqueue:
        study.enqueue_trial(point)
    draws = []
    for _ in range(n):
        trial = study.ask()
        space(trial)
        draws.append(trial.params)
        study.tell(trial, 0.5)
    return draws


def _drawn(searcher, n: int) -> list[dict]:
    configs = []
    for number in range(n):
        configs.append(searcher.suggest(f"t{number}"))
        searcher.on_trial_complete(f"t{number}", {"val_map_at_r": 0.5, "training_iteration": 3, "config": {}})
    return configs


def test_a_searcher_never_runs_a_configuration_again_while_the_space_has_others():
    from semproxy.search.searcher import MAX_DRAWS, PruningAwareOptunaSearch

    # a seed with which the sampler alone repeats itself in three draws (most seeds: 7 in 9)
    seed = next(s for s in range(100) if len({d["x"] for d in _raw_draws(_discrete, 3, seed=s)}) < 3)
    searcher = PruningAwareOptunaSearch(_discrete, metric="val_map_at_r", mode="max",
                                        sampler=make_sampler(seed, "random"), max_t=3)
    searcher.set_search_properties(None, None, {})
    configs = _drawn(searcher, 4)
    assert sorted(c["x"] for c in configs[:3]) == [1, 2, 3]
    assert configs[3]["x"] in (1, 2, 3)  # nothing left: after MAX_DRAWS draws the fourth runs a repeat
    study = optuna_study(searcher)
    repeats = [t for t in study.trials if t.state.name == "FAIL"]
    assert repeats and all("duplicate_of" in t.user_attrs and "tune_trial_id" not in t.user_attrs for t in repeats)
    assert sum(t.user_attrs.get("tune_trial_id") == "t3" for t in study.trials) == 1
    assert len(repeats) >= MAX_DRAWS - 1  # the fourth's rejected draws


def test_a_warm_started_search_does_not_redraw_what_its_start_was():
    from semproxy.search.searcher import PruningAwareOptunaSearch

    earlier_first = _raw_draws(_continuous, 1, seed=0)[0]  # the earlier search's first draw, now a start
    assert _raw_draws(_continuous, 2, seed=0, enqueue=[earlier_first])[1] == earlier_first  # the sampler alone
    searcher = PruningAwareOptunaSearch(_continuous, metric="val_map_at_r", mode="max",
                                        sampler=make_sampler(0, "random"), max_t=3,
                                        points_to_evaluate=[earlier_first])
    searcher.set_search_properties(None, None, {})
    start, drawn = _drawn(searcher, 2)
    assert start == earlier_first and drawn != earlier_first


def test_an_epoch_reported_again_after_a_restart_keeps_its_first_value_quietly(recwarn):
    searcher = _searcher(max_t=3)
    searcher.suggest("t")
    for value in (0.4, 0.9):  # epoch 1, then epoch 1 again from the restarted trial
        searcher.on_trial_result("t", {"val_map_at_r": value, "training_iteration": 1})
    assert optuna_study(searcher).trials[0].intermediate_values == {1: 0.4}
    assert not [w for w in recwarn if "already reported" in str(w.message)]
