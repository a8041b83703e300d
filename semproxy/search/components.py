"""Stage 3 of a search: the Tuner, assembled from parts chosen by name.

The searcher comes from :data:`~semproxy.search.searcher.SAMPLERS`, the scheduler from
:data:`~semproxy.search.schedulers.SCHEDULERS` (both named by ``SearchSettings``), the trainable is
:func:`~semproxy.search.trainable.train_dml` with the run's resources, and the callbacks keep the
scheduler's state across resumes, record every reported epoch and stop the search before its disk fills.
"""
from __future__ import annotations

from ray import tune

from ..errors import SearchError, first_line
from ..metric_names import OBJECTIVE, OBJECTIVE_MODE
from ..prepared import PreparedData
from .guards import FreeSpaceGuard
from .history import TrialHistoryCallback
from .plan import SearchPlan, existing_folder
from .schedulers import build_scheduler
from .searcher import build_searcher
from .study import open_storage
from .trainable import train_dml

__all__ = ["build_tuner"]


def build_tuner(plan: SearchPlan, data: PreparedData, concurrent: int, *, resume: bool) -> tune.Tuner:
    """A new Tuner, or the run's own restored one (same trainable, errored trials resumed)."""
    ask = plan.resources
    trainable = tune.with_resources(tune.with_parameters(train_dml, base=plan.base.to_mapping(), data=data),
                                    {"cpu": ask.cpus_per_trial, "gpu": ask.gpus_per_trial})
    if resume:
        try:
            return tune.Tuner.restore(str(plan.run_dir), trainable=trainable, resume_errored=True)
        except Exception as error:  # noqa: BLE001 - whatever Tune cannot restore is one line to the user
            raise SearchError(f"--resume: Tune cannot restore {plan.run_dir}: {first_line(error)}") from None
    settings = plan.settings
    searcher = build_searcher(plan.space.define_by_run(), name=settings.searcher, seed=settings.seed,
                              objectives=settings.objective_list, max_t=settings.max_epochs, starts=plan.starts,
                              storage=open_storage(plan.study_url), study_name=plan.name,
                              constraints=settings.constraint_specs)
    scheduler, keep_state = build_scheduler(settings, OBJECTIVE, OBJECTIVE_MODE)
    guard = FreeSpaceGuard(existing_folder(plan.storage), plan.free_space_margin(concurrent))
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=settings.num_samples,
                                    max_concurrent_trials=concurrent),
        run_config=tune.RunConfig(
            name=plan.name, storage_path=str(plan.storage), callbacks=[guard, *keep_state, TrialHistoryCallback()],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=OBJECTIVE,
                                                    checkpoint_score_order=OBJECTIVE_MODE),
            failure_config=tune.FailureConfig(max_failures=ask.max_failures)),
    )
