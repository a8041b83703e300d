"""The private Ray attributes semproxy relies on (all in semproxy/search/ray_compat.py) exist in this Ray."""
from __future__ import annotations

import ray
from ray.tune.schedulers import ASHAScheduler

from semproxy.search import ray_compat
from semproxy.search.objectives import parse_objectives
from semproxy.search.searcher import build_searcher


def test_ray_is_the_release_the_accessors_were_written_for():
    assert ray.__version__.startswith(ray_compat.SUPPORTED_RAY), (
        f"ray {ray.__version__}: check every accessor of semproxy/search/ray_compat.py, then SUPPORTED_RAY")


def test_asha_accessors_read_ray_asha():
    assert ray_compat.asha_milestones(max_t=9, grace_period=1, reduction_factor=3) == [1, 3, 9]
    assert ray_compat.asha_milestones(max_t=4, grace_period=1, reduction_factor=2) == [1, 2, 4]
    scheduler = ASHAScheduler(time_attr="training_iteration", metric="m", mode="max", max_t=9, grace_period=1,
                              reduction_factor=3)
    assert ray_compat.asha_rungs(scheduler) == {1: {}, 3: {}, 9: {}}
    assert ray_compat.asha_cutoff(scheduler, {}) is None  # the top third of the recorded values continue
    assert abs(ray_compat.asha_cutoff(scheduler, {"a": 0.0, "b": 0.3, "c": 0.6, "d": 0.9}) - 0.6) < 1e-12


def test_optuna_searcher_accessors_follow_a_trial():
    def space(trial) -> None:
        trial.suggest_float("lr", 1e-3, 1e-1, log=True)

    searcher = build_searcher(space, name="tpe", seed=0, objectives=parse_objectives("map_at_r"), max_t=3,
                              starts=None)
    searcher.set_search_properties(None, None, {})
    config = searcher.suggest("t1")
    assert ray_compat.optuna_trial(searcher, "t1").params["lr"] == config["lr"]
    assert not ray_compat.is_completed(searcher, "t1")
    ray_compat.mark_completed(searcher, "t1")
    assert ray_compat.is_completed(searcher, "t1") and len(ray_compat.optuna_study(searcher).trials) == 1


def test_an_error_tune_wraps_as_a_traceback_reads_as_its_cause():
    from ray.tune.error import TuneError

    from semproxy.errors import first_line

    wrapped = TuneError("Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"
                        "optuna.exceptions.UpdateFinishedTrialError: Trial#3 has already finished.\n")
    assert first_line(wrapped) == "optuna.exceptions.UpdateFinishedTrialError: Trial#3 has already finished."
    assert first_line(TuneError("the search stopped\nmore detail")) == "the search stopped"
    assert first_line(TuneError("")) == "TuneError"
