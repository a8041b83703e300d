"""What a search optimises: validation MAP@R, optionally against costs each trial measures.

Parameter-efficient tuning is a trade-off: ``--objectives map_at_r,trainable_params`` makes the
search multi-objective (Optuna's TPE over the objective vector), while the scheduler (ASHA) still
stops trials on validation MAP@R alone. Every trial reports its costs with each epoch, measured by
the trial itself, so the objectives and the report use measured values:

- ``trainable_params``: the parameters the method learns in all classes (the paper's accounting,
  :func:`semproxy.models.count_parameters`);
- ``step_ms``: the mean time of a training step over the last epoch, waits for data excluded;
- ``peak_mem_mb``: the device's peak allocated memory (a GPU), or the process's peak resident
  memory (the CPU).

Constraints (``--constraint trainable_params<=1e6``) go to Optuna's constrained TPE: a trial that
breaks one is infeasible and never on the Pareto front.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable

from ..errors import SearchError
from ..metric_names import OBJECTIVE

__all__ = ["Objective", "OBJECTIVES", "COSTS", "parse_objectives", "Constraint", "parse_constraints"]


@dataclass(frozen=True)
class Objective:
    """One objective: the result key a trial reports it under, and whether more is better."""

    name: str
    metric: str
    direction: str  # "maximize" or "minimize"
    label: str

    @property
    def mode(self) -> str:
        return "max" if self.direction == "maximize" else "min"


OBJECTIVES: dict[str, Objective] = {o.name: o for o in (
    Objective("map_at_r", OBJECTIVE, "maximize", "validation MAP@R"),
    Objective("trainable_params", "trainable_params", "minimize", "trainable parameters"),
    Objective("step_ms", "step_ms", "minimize", "step time (ms)"),
    Objective("peak_mem_mb", "peak_mem_mb", "minimize", "peak memory (MB)"),
)}
#: The costs a trial measures and reports every epoch (whether or not they are objectives).
COSTS = ("trainable_params", "step_ms", "peak_mem_mb")


def parse_objectives(text: str, where: str = "--objectives") -> tuple[Objective, ...]:
    """``map_at_r,trainable_params`` -> the objectives; validation MAP@R must come first."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in OBJECTIVES]
    if unknown:
        raise SearchError(f"{where}: unknown objective '{unknown[0]}' (expected {', '.join(OBJECTIVES)})")
    if not names or names[0] != "map_at_r" or len(set(names)) != len(names):
        raise SearchError(f"{where}: give map_at_r first, then any of {', '.join(COSTS)} once each, got "
                          f"{text!r}")
    return tuple(OBJECTIVES[n] for n in names)


_OPERATORS: dict[str, Callable[[float, float], float]] = {
    "<=": lambda value, bound: value - bound, ">=": lambda value, bound: bound - value}


@dataclass(frozen=True)
class Constraint:
    """``metric <= bound`` or ``metric >= bound``; its violation is positive, 0 or less when it holds."""

    metric: str
    op: str
    bound: float

    def violation(self, value: float) -> float:
        return _OPERATORS[self.op](value, self.bound)

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.bound:g}"


_CONSTRAINT = re.compile(r"^\s*([a-z_]+)\s*(<=|>=)\s*([-+0-9.eE]+)\s*$")


def parse_constraints(texts: list[str], where: str = "--constraint") -> tuple[Constraint, ...]:
    """``["trainable_params<=1e6"]`` -> constraints on reported costs or on validation MAP@R."""
    allowed = {o.metric: o.name for o in OBJECTIVES.values()}
    constraints = []
    for text in texts:
        match = _CONSTRAINT.match(text)
        name = match.group(1) if match else None
        metric = OBJECTIVES[name].metric if name in OBJECTIVES else None
        try:
            bound = float(match.group(3)) if match else math.nan
        except ValueError:
            bound = math.nan
        if metric is None or not math.isfinite(bound):
            raise SearchError(f"{where} {text!r}: expected NAME<=NUMBER or NAME>=NUMBER with NAME one of "
                              f"{', '.join(allowed.values())}")
        constraints.append(Constraint(metric, match.group(2), bound))
    return tuple(constraints)

