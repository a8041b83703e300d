"""What a search runs (trials, their length, ASHA's cuts, the seed) and what each trial gets.

The typed source of these names and their ranges, checked before Ray starts. A search's settings
come from three places, later ones winning: the defaults here, a space file's ``search:`` block,
and the command line (where ``--smoke`` first shrinks them). Each value is checked where it comes
from, so an error names the file's key or the flag; :meth:`SearchSettings.check` then checks the
combination. :class:`TrialResources` are the command line's alone and may change on ``--resume``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Literal, Optional

from ..errors import did_you_mean
from ..typed_config import ConfigError, field_names, knob, validate
from .objectives import Constraint, Objective, parse_constraints, parse_objectives

__all__ = ["SearchSettings", "TrialResources", "SMOKE", "flag_label", "check_values"]

# The names of semproxy.search.schedulers.SCHEDULERS and searcher.SAMPLERS (a test checks they agree).
Scheduler = Literal["asha", "median", "fifo"]
Searcher = Literal["tpe", "random"]


@dataclass
class SearchSettings:
    """How many trials, how long each may train, how ASHA stops them, the sampler's seed, and whether
    the run is repeatable exactly (``deterministic``: trials one at a time)."""

    num_samples: int = knob(16, "trials", low=1, high=100_000)
    max_epochs: int = knob(15, "epochs of a trial that is never stopped (ASHA's max_t)", low=1, high=10_000)
    grace_period: int = knob(2, "asha, median: epochs before a trial can be stopped", low=1, high=10_000)
    reduction_factor: int = knob(3, "ASHA: keep 1 / this many trials at each rung", low=2, high=100)
    scheduler: Scheduler = knob("asha", "early stopping: asha, median (the median stopping rule), or fifo "
                                        "(every trial runs to the end)")
    searcher: Searcher = knob("tpe", "how trials are sampled: tpe (Optuna's TPE) or random")
    seed: int = knob(0, "seed of the TPE sampler", low=0, high=2**32 - 1)
    objectives: str = knob("map_at_r", "what the search optimises: map_at_r, then any costs the trials measure "
                                       "(trainable_params, step_ms, peak_mem_mb), comma-separated")
    constraints: str = knob("", "constraints on reported values, e.g. 'trainable_params<=1e6', comma-separated")
    deterministic: bool = knob(False, "exact re-runs: one trial at a time, so the scheduler's decisions and the "
                                      "searcher's suggestions repeat for a seed (slower by the concurrency)")

    def check(self, where: str, sources: Optional[dict[str, str]] = None) -> "SearchSettings":
        """Validate each value and the combination; ``sources`` names where each value came from."""
        validate(self, where=where)
        said = sources or {}
        parse_objectives(self.objectives, said.get("objectives", where))
        parse_constraints(self.constraint_list, said.get("constraints", where))
        if self.scheduler != "fifo" and self.grace_period > self.max_epochs:
            raise ConfigError(f"grace_period {self.grace_period} ({said.get('grace_period', 'default')}) exceeds "
                              f"max_epochs {self.max_epochs} ({said.get('max_epochs', 'default')}): the "
                              f"{self.scheduler} scheduler could never stop a trial")
        return self

    def to_mapping(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def budget(self) -> str:
        """The search's size in words: ``6 trials x up to 4 epochs`` (``1 trial x up to 1 epoch``)."""
        return (f"{self.num_samples} trial{'s' * (self.num_samples != 1)} x up to {self.max_epochs} "
                f"epoch{'s' * (self.max_epochs != 1)}")

    @property
    def constraint_list(self) -> list[str]:
        return [c for c in self.constraints.split(",") if c.strip()]

    @property
    def objective_list(self) -> tuple[Objective, ...]:
        """The objectives, validation MAP@R first (the one the scheduler stops trials on)."""
        return parse_objectives(self.objectives)

    @property
    def constraint_specs(self) -> tuple[Constraint, ...]:
        return parse_constraints(self.constraint_list)


#: The CI-sized search of ``tune.py --smoke``.
SMOKE = {"num_samples": 6, "max_epochs": 4, "grace_period": 1, "reduction_factor": 2}


@dataclass
class TrialResources:
    """What each trial asks of the cluster, and how failures are retried."""

    gpus_per_trial: float = knob(0.0, "GPU fraction per trial: 0.25 packs four trials on a GPU", low=0.0, high=1024)
    cpus_per_trial: float = knob(1.0, "CPUs per trial", low=0.01, high=1024)
    max_concurrent: Optional[int] = knob(None, "cap on concurrent trials", low=1, high=100_000)
    max_failures: int = knob(0, "restarts of a crashed trial from its last checkpoint", low=0, high=100)

    def check(self, where: str = "command line") -> "TrialResources":
        validate(self, where=where, label=flag_label)
        if self.gpus_per_trial > 1 and not float(self.gpus_per_trial).is_integer():
            raise ConfigError(f"{where}: --gpus-per-trial above 1 must be a whole number of GPUs, "
                              f"got {self.gpus_per_trial:g}")
        return self


def flag_label(name: str) -> str:
    """A field's command-line flag: ``num_samples`` -> ``--num-samples``."""
    return "--" + name.replace("_", "-")


def check_values(values: dict[str, Any], where: str,
                 label: Optional[Callable[[str], str]] = None) -> dict[str, Any]:
    """Validate a partial mapping of :class:`SearchSettings` values (a space's ``search:`` block, flags).

    Unknown names, wrong types and out-of-range values raise ConfigError naming ``where`` and the
    key (rendered by ``label``); returns the values converted to their field types.
    """
    label = label or (lambda key: f"key '{key}'")
    names = field_names(SearchSettings)
    for key in values:
        if key not in names:
            raise ConfigError(f"{where}: unknown {label(key)}"
                              + (did_you_mean(key, names) or f" (expected {', '.join(names)})"))
    probe = dataclasses.replace(SearchSettings(), **values)
    validate(probe, where=where, label=label)
    return {key: getattr(probe, key) for key in values}
