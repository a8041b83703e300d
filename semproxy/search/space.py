"""Search spaces in YAML, validated against the config, sampled by Optuna define-by-run.

A space file::

    params:                                   # config field name -> fixed value or distribution
      method: vptsp_gru                       # fixed
      optimizer: {choice: [sgd, adam, adamw]}
      lr: {loguniform: [1.0e-4, 5.0e-2]}
      proxy_bias_ratio: {quniform: [0.1, 0.9, 0.1]}
      adapter_layers: {randint: [1, 12], when: {method: adapter}}   # bounds inclusive
    search:                                   # optional defaults of tune.py's flags
      num_samples: 32
      max_epochs: 15
      grace_period: 2
      reduction_factor: 3
    starts:                                   # optional points evaluated first
      - {optimizer: sgd, lr: 0.005}

Distributions: ``choice``, ``uniform``, ``loguniform``, ``quniform`` [low, high, q], ``randint``
and ``qrandint`` [low, high(, q)] with inclusive bounds. ``when`` maps earlier parameters to a value
or a list of values; the parameter is sampled only when all hold. Every value is checked against
the config field's type and range when the file is loaded, so a bad space fails before Ray starts.
"""
from __future__ import annotations

import difflib
import math
import typing
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional

from ..config import Config, ConfigError
from ..typed_config import coerce, read_yaml

__all__ = ["ParamSpec", "SearchSpace", "load_space", "sample_params", "fit_batches_to_classes", "SEARCH_KEYS",
           "CACHE_FIELDS"]

DISTRIBUTIONS = ("choice", "uniform", "loguniform", "quniform", "randint", "qrandint")
SEARCH_KEYS = {"num_samples": int, "max_epochs": int, "grace_period": int, "reduction_factor": int,
               "scheduler": str}
# Fields that decide the shared image cache: fixed in a space is fine, sampled is not.
CACHE_FIELDS = frozenset({"dataset", "data_root", "val_fraction", "img_size", "backbone", "weights", "pretrained",
                          "interpolation", "crop_pct", "cache_dir", "synthetic_classes", "synthetic_per_class",
                          "synthetic_size", "max_bad_fraction"})


@dataclass(frozen=True)
class ParamSpec:
    """One searched or fixed parameter: ``kind`` is 'fixed' or one of DISTRIBUTIONS."""

    name: str
    kind: str
    args: tuple
    when: dict[str, tuple] = field(default_factory=dict)

    def active(self, values: dict[str, Any]) -> bool:
        return all(values.get(key) in allowed for key, allowed in self.when.items())

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is one this parameter can take (for starting points)."""
        if self.kind in ("fixed", "choice"):
            options = self.args if self.kind == "choice" else (self.args[0],)
            return any(value == o and type(value) is type(o) for o in options)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        low, high = self.args[0], self.args[1]
        if not low <= value <= high:
            return False
        if self.kind in ("quniform", "qrandint") or (self.kind == "randint" and len(self.args) == 3):
            step = self.args[2]
            return math.isclose((value - low) / step, round((value - low) / step), abs_tol=1e-9)
        return self.kind not in ("randint",) or float(value).is_integer()


@dataclass(frozen=True)
class SearchSpace:
    path: Path
    params: tuple[ParamSpec, ...]
    search: dict[str, Any]
    starts: tuple[dict[str, Any], ...]

    @property
    def fixed(self) -> dict[str, Any]:
        """Unconditional fixed values: applied to the base config before anything runs."""
        return {p.name: p.args[0] for p in self.params if p.kind == "fixed" and not p.when}

    @property
    def sampled(self) -> tuple[ParamSpec, ...]:
        return tuple(p for p in self.params if p.kind != "fixed" or p.when)

    def define_by_run(self) -> Callable:
        """A picklable Optuna define-by-run function (a partial of a module-level function)."""
        return partial(sample_params, specs=self.sampled, fixed=self.fixed)

    def point_in_space(self, point: dict[str, Any]) -> Optional[dict[str, Any]]:
        """The part of ``point`` this space samples, or None when some value lies outside it."""
        values = {**self.fixed}
        chosen = {}
        for spec in self.sampled:
            if not spec.active({**point, **values}):
                continue
            value = point.get(spec.name)
            if not spec.contains(value):
                return None
            values[spec.name] = chosen[spec.name] = value
        return chosen


def fit_batches_to_classes(space: SearchSpace, base: Config, num_classes: int) -> tuple[SearchSpace, list[str]]:
    """Drop batch_size / samples_per_class values that cannot form a batch from ``num_classes`` classes.

    A batch holds batch_size / samples_per_class distinct classes; a value that fits no combination
    would only produce trials rejected at start-up. Returns the narrowed space and what was dropped.
    Raises ConfigError when nothing fits.
    """
    by_name = {p.name: p for p in space.params}

    def options(name: str) -> tuple:
        spec = by_name.get(name)
        if spec is None:
            return (getattr(base.data, name),)
        return spec.args if spec.kind == "choice" else (spec.args[0],) if spec.kind == "fixed" else ()

    batches, per_class = options("batch_size"), options("samples_per_class")
    if not batches or not per_class:  # a numeric range: leave it to the trials
        return space, []
    fits = [(b, k) for b in batches for k in per_class if b % k == 0 and b // k <= num_classes]
    if not fits:
        raise ConfigError(f"{space.path}: no batch_size / samples_per_class in the space makes a batch from the "
                          f"{num_classes} training classes")
    keep = {"batch_size": sorted({b for b, _ in fits}), "samples_per_class": sorted({k for _, k in fits})}
    notes, params = [], []
    for spec in space.params:
        if spec.name in keep and spec.kind == "choice" and set(spec.args) != set(keep[spec.name]):
            dropped = [v for v in spec.args if v not in keep[spec.name]]
            notes.append(f"{spec.name}: dropped {dropped} (a batch needs at most {num_classes} classes)")
            values = tuple(v for v in spec.args if v in keep[spec.name])
            spec = ParamSpec(spec.name, "choice" if len(values) > 1 else "fixed", values, spec.when)
        params.append(spec)
    starts = tuple(p for p in space.starts
                   if p.get("batch_size", batches[0]) in keep["batch_size"]
                   and p.get("samples_per_class", per_class[0]) in keep["samples_per_class"])
    return SearchSpace(space.path, tuple(params), space.search, starts), notes


def sample_params(trial, specs: tuple[ParamSpec, ...], fixed: dict[str, Any]) -> dict[str, Any]:
    """Optuna define-by-run: sample each active parameter in file order; returns the fixed ones."""
    values = dict(fixed)
    constants = {}
    for spec in specs:
        if not spec.active(values):
            continue
        if spec.kind == "fixed":
            values[spec.name] = constants[spec.name] = spec.args[0]
        elif spec.kind == "choice":
            values[spec.name] = trial.suggest_categorical(spec.name, list(spec.args))
        elif spec.kind in ("uniform", "loguniform", "quniform"):
            step = spec.args[2] if spec.kind == "quniform" else None
            values[spec.name] = trial.suggest_float(spec.name, spec.args[0], spec.args[1], step=step,
                                                    log=spec.kind == "loguniform")
        else:
            step = spec.args[2] if len(spec.args) == 3 else 1
            values[spec.name] = trial.suggest_int(spec.name, spec.args[0], spec.args[1], step=step)
    return constants


def _field_types() -> dict[str, tuple[Any, dict]]:
    owners = Config.section_of()
    out = {}
    for name, section in owners.items():
        cls = type(getattr(Config(), section))
        hints = typing.get_type_hints(cls)
        meta = {f.name: f.metadata for f in cls.__dataclass_fields__.values()}
        out[name] = (hints[name], meta[name])
    return out


def _check_value(where: str, name: str, value: Any, field_type: Any, meta: dict) -> Any:
    ok, value = coerce(value, field_type)
    if not ok:
        raise ConfigError(f"{where}: key '{name}': {value!r} is not a valid value of this field")
    low, high = meta.get("low"), meta.get("high")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if low is not None and value < low or high is not None and value > high:
            raise ConfigError(f"{where}: key '{name}': {value!r} is outside the field's range [{low}, {high}]")
    return value


def _parse_spec(where: str, name: str, raw: Any, types: dict, earlier: list[str]) -> ParamSpec:
    field_type, meta = types[name]
    if not isinstance(raw, dict):
        return ParamSpec(name, "fixed", (_check_value(where, name, raw, field_type, meta),))
    raw = dict(raw)
    when_raw = raw.pop("when", {})
    kinds = [k for k in raw if k in DISTRIBUTIONS]
    unknown = [k for k in raw if k not in DISTRIBUTIONS]
    if unknown or len(kinds) != 1:
        bad = unknown[0] if unknown else "/".join(kinds) or "nothing"
        close = difflib.get_close_matches(str(bad), DISTRIBUTIONS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"{where}: key '{name}': expected one of {', '.join(DISTRIBUTIONS)} (and 'when'), "
                          f"got '{bad}'{hint}")
    kind, args = kinds[0], raw[kinds[0]]
    if not isinstance(args, list) or not args:
        raise ConfigError(f"{where}: key '{name}': '{kind}' needs a non-empty list, got {args!r}")
    if kind == "choice":
        args = tuple(_check_value(where, name, v, field_type, meta) for v in args)
    else:
        size = {"uniform": (2,), "loguniform": (2,), "quniform": (3,), "randint": (2, 3), "qrandint": (3,)}[kind]
        if len(args) not in size or any(isinstance(a, bool) or not isinstance(a, (int, float)) for a in args):
            raise ConfigError(f"{where}: key '{name}': '{kind}' needs {' or '.join(map(str, size))} numbers, got {args!r}")
        if args[0] > args[1]:
            raise ConfigError(f"{where}: key '{name}': low {args[0]} > high {args[1]}")
        if kind == "loguniform" and args[0] <= 0:
            raise ConfigError(f"{where}: key '{name}': loguniform needs positive bounds, got {args[0]}")
        if len(args) == 3 and args[2] <= 0:
            raise ConfigError(f"{where}: key '{name}': the step must be positive, got {args[2]}")
        integer = kind in ("randint", "qrandint")
        if integer and any(not float(a).is_integer() for a in args):
            raise ConfigError(f"{where}: key '{name}': '{kind}' needs integer bounds, got {args!r}")
        args = tuple(int(a) for a in args) if integer else tuple(float(a) for a in args)
        for bound in args[:2]:
            _check_value(where, name, bound, field_type, meta)
    if not isinstance(when_raw, dict):
        raise ConfigError(f"{where}: key '{name}': 'when' must map parameters to values, got {when_raw!r}")
    when = {}
    for key, allowed in when_raw.items():
        if key not in earlier:
            raise ConfigError(f"{where}: key '{name}': 'when' refers to '{key}', which is not a parameter above it")
        allowed = allowed if isinstance(allowed, list) else [allowed]
        when[key] = tuple(_check_value(where, key, v, *types[key]) for v in allowed)
    return ParamSpec(name, kind, args, when)


def load_space(path: str | Path) -> SearchSpace:
    """Read and validate a search-space file; every problem is a one-line ConfigError naming file and key."""
    path = Path(path)
    where = str(path)
    raw = read_yaml(path, "search space")
    if not isinstance(raw, dict) or not isinstance(raw.get("params"), dict) or not raw["params"]:
        raise ConfigError(f"{where}: expected a mapping with a non-empty 'params:' mapping")
    for key in raw:
        if key not in ("params", "search", "starts"):
            close = difflib.get_close_matches(str(key), ["params", "search", "starts"], n=1)
            raise ConfigError(f"{where}: unknown key '{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    types = _field_types()
    specs: list[ParamSpec] = []
    for name, spec_raw in raw["params"].items():
        if name not in types:
            close = difflib.get_close_matches(str(name), list(types), n=1)
            raise ConfigError(f"{where}: unknown key '{name}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        spec = _parse_spec(where, name, spec_raw, types, [s.name for s in specs])
        if name in CACHE_FIELDS and (spec.kind != "fixed" or spec.when):
            raise ConfigError(f"{where}: key '{name}' cannot be searched: it decides the shared image cache")
        specs.append(spec)
    search = raw.get("search") or {}
    if not isinstance(search, dict):
        raise ConfigError(f"{where}: 'search' must be a mapping")
    for key, value in search.items():
        if key not in SEARCH_KEYS:
            raise ConfigError(f"{where}: unknown key 'search.{key}' (expected {', '.join(SEARCH_KEYS)})")
        if not isinstance(value, SEARCH_KEYS[key]) or isinstance(value, bool):
            raise ConfigError(f"{where}: key 'search.{key}' must be {SEARCH_KEYS[key].__name__}, got {value!r}")
    if search.get("scheduler", "asha") not in ("asha", "fifo"):
        raise ConfigError(f"{where}: key 'search.scheduler' must be asha or fifo, got {search['scheduler']!r}")
    space = SearchSpace(path.resolve(), tuple(specs), dict(search), ())
    starts = raw.get("starts") or []
    if not isinstance(starts, list) or not all(isinstance(s, dict) for s in starts):
        raise ConfigError(f"{where}: 'starts' must be a list of mappings")
    checked = []
    for number, start in enumerate(starts, start=1):
        point = space.point_in_space(start)
        if point is None or set(start) - {s.name for s in specs}:
            raise ConfigError(f"{where}: starts[{number}] {start} does not lie in the space")
        checked.append(point)
    return SearchSpace(space.path, space.params, space.search, tuple(checked))
