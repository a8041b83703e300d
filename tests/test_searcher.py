"""ASHA's rungs survive a save/restore through the state callback; TPE is seeded, multivariate, grouped."""
from __future__ import annotations

import pickle

from ray.tune.schedulers import ASHAScheduler

from semproxy.search.searcher import AshaStateCallback, make_sampler


def _asha():
    return ASHAScheduler(time_attr="training_iteration", metric="val_map_at_r", mode="max", max_t=9,
                         grace_period=1, reduction_factor=3)


def test_asha_rungs_round_trip_through_the_callback_state():
    scheduler = _asha()
    rungs = scheduler._brackets[0]._rungs
    assert [m for m, _ in rungs] == [9, 3, 1]
    for milestone, recorded in rungs:
        recorded.update({f"t{milestone}a": 0.5, f"t{milestone}b": 0.25})
    scheduler._num_stopped = 3
    state = pickle.loads(pickle.dumps(AshaStateCallback(scheduler).get_state()))  # Tune pickles it

    restored = _asha()
    callback = AshaStateCallback(restored)
    assert all(not recorded for _, recorded in restored._brackets[0]._rungs)
    callback.set_state(state)
    assert restored._brackets[0]._rungs == rungs and restored._num_stopped == 3
    assert callback.rungs()[1] == {"t1a": 0.5, "t1b": 0.25}
    # the restored rungs drive decisions: a trial below the rung's cutoff is stopped
    assert restored._brackets[0].cutoff(restored._brackets[0]._rungs[-1][1]) is not None


def test_tpe_sampler_settings():
    sampler = make_sampler(7)
    assert sampler._multivariate and sampler._group and sampler._rng.rng.random() == make_sampler(7)._rng.rng.random()


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
    states = [t.state.name for t in searcher._ot_study.trials]
    # a trial whose sampled 'epochs' is below max_t finished when it ran them all: COMPLETE, not PRUNED
    assert states == ["COMPLETE", "PRUNED", "COMPLETE", "PRUNED"]
