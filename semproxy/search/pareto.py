"""The Pareto front of a multi-objective search (accuracy against cost), read from its study.

The front is Optuna's own (``study.best_trials``: finished trials no other finished, feasible trial
beats on every objective), so the report and ``export`` show exactly what Optuna optimised. A trial
stopped early by the scheduler is PRUNED (see semproxy.search.searcher) and never on the front.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..errors import SearchError
from .objectives import Objective, parse_objectives
from .record import SearchRecord
from .results import format_value
from .study import load_study, run_study

__all__ = ["FrontPoint", "StudyPoints", "read_study_points", "choose", "format_objective"]


@dataclass(frozen=True)
class FrontPoint:
    """A finished trial with its objective values, in the objectives' order."""

    number: int
    tune_trial_id: Optional[str]
    values: tuple[float, ...]
    params: dict[str, Any]
    stopped_at_epoch: Optional[int]
    feasible: bool


@dataclass
class StudyPoints:
    """Every trial of a study that has objective values or costs, and which are on the front."""

    objectives: tuple[Objective, ...]
    points: list[FrontPoint]
    front: list[FrontPoint]  # highest validation MAP@R first


def _values(trial: Any, objectives: tuple[Objective, ...]) -> Optional[tuple[float, ...]]:
    if trial.values:
        return tuple(trial.values)
    attrs = trial.user_attrs  # a pruned trial: its costs as measured, no comparable MAP@R
    costs = [attrs.get(o.metric) for o in objectives[1:]]
    return None if None in costs else (float("nan"), *costs)


def read_study_points(run_dir: str | Path) -> StudyPoints:
    """The run's study as points for the Pareto view; a single-objective run has an empty front."""
    import optuna

    record = SearchRecord.read(run_dir)
    objectives = parse_objectives(record.settings["objectives"])
    where = f"{Path(run_dir) / 'search.json'}: study"
    study = load_study(*run_study(Path(run_dir), record.study), where=where)
    on_front = {t.number for t in study.best_trials} if len(objectives) > 1 else set()
    points = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,
                                                          optuna.trial.TrialState.PRUNED)):
        values = _values(trial, objectives)
        if values is None:
            continue
        points.append(FrontPoint(trial.number, trial.user_attrs.get("tune_trial_id"), values, dict(trial.params),
                                 trial.user_attrs.get("stopped_at_epoch"),
                                 all(v <= 0 for v in trial.constraints.values())))
    front = sorted((p for p in points if p.number in on_front), key=lambda p: -p.values[0])
    return StudyPoints(objectives, points, front)


def choose(points: StudyPoints, *, max_params: Optional[float] = None,
           pareto_index: Optional[int] = None) -> FrontPoint:
    """The front point ``export`` writes: the ``pareto_index``-th, or the best under ``max_params``."""
    if len(points.objectives) < 2:
        raise SearchError("--max-params / --pareto-index choose on a Pareto front: this run has one objective "
                          "(search with --objectives map_at_r,trainable_params)")
    if not points.front:
        raise SearchError("the study has no finished trial on its Pareto front yet")
    if pareto_index is not None:
        if not 0 <= pareto_index < len(points.front):
            raise SearchError(f"--pareto-index {pareto_index}: the front has {len(points.front)} points "
                              f"(0 to {len(points.front) - 1})")
        return points.front[pareto_index]
    names = [o.name for o in points.objectives]
    if "trainable_params" not in names:
        raise SearchError("--max-params: trainable_params is not an objective of this run")
    column = names.index("trainable_params")
    fitting = [p for p in points.front if p.values[column] <= max_params]
    if not fitting:
        smallest = min(p.values[column] for p in points.front)
        raise SearchError(f"--max-params {max_params:g}: the front's smallest model has {smallest:,.0f} "
                          f"trainable parameters")
    return fitting[0]


def format_objective(value: float) -> str:
    """An objective value as a table shows it. Optuna keeps every value as a float, so a count such as
    ``trainable_params`` arrives as 13952.0: whole numbers print as integers with thousands separators
    (13,952), other values of 1000 or more to the unit (1,234), the rest as the trials table prints
    values, to 4 significant digits (0.7234)."""
    if math.isfinite(value) and (float(value).is_integer() or abs(value) >= 1000):
        return f"{value:,.0f}"
    return format_value(float(value))
