"""Search spaces in YAML, validated against the config, sampled by Optuna define-by-run.

A space file::

    params:                                   # config field name -> fixed value or distribution
      method: vptsp_gru                       # fixed
      optimizer: {choice: [sgd, adam, adamw]}
      lr: {loguniform: [1.0e-4, 5.0e-2]}
      proxy_bias_ratio: {quniform: [0.1, 0.9, 0.1]}
      adapter_layers: {randint: [1, 12], when: {method: adapter}}   # bounds inclusive
    search:                                   # optional defaults of tune.py's flags (SearchSettings)
      num_samples: 32
      max_epochs: 15
      grace_period: 2
      reduction_factor: 3
      scheduler: asha
    starts:                                   # optional points evaluated first
      - {optimizer: sgd, lr: 0.005}
    extends: global.yaml                      # optional: a space whose params, search and starts come first

Distributions: ``choice``, ``uniform``, ``loguniform``, ``quniform`` [low, high, q], ``randint``
and ``qrandint`` [low, high(, q)] with inclusive bounds. ``when`` maps earlier parameters to a value
or a list of values; the parameter is sampled only when all hold. Every value is checked against
the config field's type and range when the file is loaded, so a bad space fails before Ray starts;
so are degenerate ones: a choice listing a value twice, a step wider than its range, a ``when``
naming a value its parameter never takes.
"""
from __future__ import annotations

import difflib
import math
import typing
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from optuna.distributions import (BaseDistribution, CategoricalDistribution, FloatDistribution,
                                  IntDistribution)

from ..config import CACHE, Config, ConfigError
from ..errors import did_you_mean, shown
from ..typed_config import coerce, read_yaml, short, unknown_key
from .settings import check_values

__all__ = ["ParamSpec", "SearchSpace", "load_space", "read_space_document", "distribution", "suggest", "sample_params",
           "fit_batches_to_classes", "CACHE_FIELDS"]

DISTRIBUTIONS = ("choice", "uniform", "loguniform", "quniform", "randint", "qrandint")
# How many numbers each numeric distribution takes: [low, high] or [low, high, step].
ARITY = {"uniform": (2,), "loguniform": (2,), "quniform": (3,), "randint": (2, 3), "qrandint": (3,)}
INTEGER_KINDS = ("randint", "qrandint")
TOP_KEYS = ("extends", "params", "search", "starts")
# Fields that decide the shared image cache: fixed in a space is fine, sampled is not.
CACHE_FIELDS = Config.fields_with(CACHE)


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
        chosen, _ = self.locate(point)
        return chosen

    def locate(self, point: dict[str, Any]) -> tuple[Optional[dict[str, Any]], Optional[str]]:
        """(the part of ``point`` this space samples, None) or (None, why it does not lie in the space)."""
        values = {**self.fixed}
        chosen = {}
        for spec in self.sampled:
            if not spec.active({**point, **values}):
                continue
            value = point.get(spec.name)
            if not spec.contains(value):
                shown = "missing" if spec.name not in point else short(value)
                return None, f"{spec.name} {shown} is not in {spec.kind} {short(list(spec.args))}"
            values[spec.name] = chosen[spec.name] = value
        return chosen, None


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


def distribution(kind: str, args: Sequence) -> BaseDistribution:
    """The Optuna distribution of a parameter written as ``{kind: args}`` (a fixed value: one choice)."""
    if kind in ("fixed", "choice"):
        return CategoricalDistribution(list(args))
    if kind in ("uniform", "loguniform", "quniform"):
        step = args[2] if kind == "quniform" else None
        return FloatDistribution(args[0], args[1], log=kind == "loguniform", step=step)
    return IntDistribution(args[0], args[1], step=args[2] if len(args) == 3 else 1)


def suggest(trial, name: str, dist: BaseDistribution) -> Any:
    """Ask an Optuna trial for ``name`` from ``dist`` through the public ``suggest_*`` API."""
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, list(dist.choices))
    ask = trial.suggest_float if isinstance(dist, FloatDistribution) else trial.suggest_int
    return ask(name, dist.low, dist.high, step=dist.step, log=dist.log)


def sample_params(trial, specs: tuple[ParamSpec, ...], fixed: dict[str, Any]) -> dict[str, Any]:
    """Optuna define-by-run: sample each active parameter in file order; returns the fixed ones."""
    values = dict(fixed)
    constants = {}
    for spec in specs:
        if not spec.active(values):
            continue
        if spec.kind == "fixed":
            values[spec.name] = constants[spec.name] = spec.args[0]
        else:
            values[spec.name] = suggest(trial, spec.name, distribution(spec.kind, spec.args))
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
        raise ConfigError(f"{where}: key '{name}': {short(value)} is not a valid value of this field")
    low, high = meta.get("low"), meta.get("high")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if low is not None and value < low or high is not None and value > high:
            raise ConfigError(f"{where}: key '{name}': {short(value)} is outside the field's range [{low}, {high}]")
    return value


def _finite_number(value: Any) -> bool:
    """A number a float can hold: not bool, NaN or infinite, and no int beyond a float's range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _numeric_args(where: str, name: str, kind: str, args: list, field_type: Any, meta: dict) -> tuple:
    """Bounds (and step) of a numeric distribution, checked and converted to int or float."""
    size = ARITY[kind]
    if len(args) not in size or not all(_finite_number(a) for a in args):
        raise ConfigError(f"{where}: key '{name}': '{kind}' needs {' or '.join(map(str, size))} finite numbers, "
                          f"got {short(args)}")
    integer = kind in INTEGER_KINDS
    if integer and any(not float(a).is_integer() for a in args):
        raise ConfigError(f"{where}: key '{name}': '{kind}' needs integer bounds, got {short(args)}")
    args = tuple(int(a) for a in args) if integer else tuple(float(a) for a in args)
    low, high = args[0], args[1]
    if low > high:
        raise ConfigError(f"{where}: key '{name}': low {low} > high {high}")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"{where}: key '{name}': loguniform needs positive bounds, got {low}")
    for bound in (low, high):
        _check_value(where, name, bound, field_type, meta)
    if len(args) == 3:
        if args[2] <= 0:
            raise ConfigError(f"{where}: key '{name}': the step must be positive, got {args[2]}")
        if args[2] > high - low and not math.isclose(args[2], high - low):  # [0.1, 0.3, 0.2] is fine
            raise ConfigError(f"{where}: key '{name}': the step {args[2]} is wider than the range [{low}, {high}]: "
                              f"only {low} could be sampled")
    return args


def _choice_args(where: str, name: str, args: list, field_type: Any, meta: dict) -> tuple:
    """The options of a choice, each a valid value of the field, none listed twice."""
    options, seen = [], set()
    for option in args:
        option = _check_value(where, name, option, field_type, meta)
        if option in seen:
            raise ConfigError(f"{where}: key '{name}': 'choice' lists {short(option)} twice")
        seen.add(option)
        options.append(option)
    return tuple(options)


def _parse_when(where: str, name: str, when_raw: Any, types: dict, earlier: dict[str, ParamSpec]) -> dict:
    """The conditions of ``when``: earlier parameters, each with values it can take in this space."""
    if not isinstance(when_raw, dict):
        raise ConfigError(f"{where}: key '{name}': 'when' must map parameters to values, got {short(when_raw)}")
    when = {}
    for key, allowed in when_raw.items():
        if key not in earlier:
            raise ConfigError(f"{where}: key '{name}': 'when' refers to {short(key)}, which is not a parameter "
                              f"above it")
        allowed = allowed if isinstance(allowed, list) else [allowed]
        if not allowed:
            raise ConfigError(f"{where}: key '{name}': 'when' lists no value of '{key}': it could never hold")
        when[key] = tuple(_check_value(where, key, v, *types[key]) for v in allowed)
        never = [v for v in when[key] if not earlier[key].contains(v)]
        if never:
            raise ConfigError(f"{where}: key '{name}': 'when' names {key} = {short(never[0])}, a value '{key}' "
                              f"never takes in this space")
    return when


def _parse_spec(where: str, name: str, raw: Any, types: dict, earlier: dict[str, ParamSpec]) -> ParamSpec:
    field_type, meta = types[name]
    if not isinstance(raw, dict):
        return ParamSpec(name, "fixed", (_check_value(where, name, raw, field_type, meta),))
    raw = dict(raw)
    when_raw = raw.pop("when", {})
    kinds = [k for k in raw if k in DISTRIBUTIONS]
    unknown = [k for k in raw if k not in DISTRIBUTIONS]
    if unknown or len(kinds) != 1:
        bad = unknown[0] if unknown else "/".join(kinds) or "nothing"
        raise ConfigError(f"{where}: key '{name}': expected one of {', '.join(DISTRIBUTIONS)} (and 'when'), "
                          f"got {short(bad)}{did_you_mean(bad, DISTRIBUTIONS)}")
    kind, args = kinds[0], raw[kinds[0]]
    if not isinstance(args, list) or not args:
        raise ConfigError(f"{where}: key '{name}': '{kind}' needs a non-empty list, got {short(args)}")
    args = (_choice_args(where, name, args, field_type, meta) if kind == "choice"
            else _numeric_args(where, name, kind, args, field_type, meta))
    return ParamSpec(name, kind, args, _parse_when(where, name, when_raw, types, earlier))


def read_space_document(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A space file's mapping with what it ``extends`` merged in (its base's keys first).

    ``extends: FILE`` (a path relative to the file, or a list of them) takes the base's params, its
    ``search:`` values and its starts; the file's own params come after the base's, and a param it
    gives again replaces the base's in place. Each base is validated on its own first, so an error
    in it names it.
    """
    where = str(path)
    raw = read_yaml(path, "search space")
    if not isinstance(raw, dict) or not isinstance(raw.get("params"), dict) or not raw["params"]:
        raise ConfigError(f"{where}: expected a mapping with a non-empty 'params:' mapping")
    for key in raw:
        if key not in TOP_KEYS:
            raise unknown_key(key, list(TOP_KEYS), where)
    bases = raw.pop("extends", None) or []
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{where}: 'extends' must be a file name or a list of them, got {short(bases)}")
    merged: dict[str, Any] = {"params": {}, "search": {}, "starts": []}
    here = (*chain, path.resolve())
    for name in bases:
        base = (path.parent / name).resolve()
        if base in chain or base == path.resolve() or len(chain) > 8:
            raise ConfigError(f"{where}: 'extends: {name}' makes a cycle of spaces")
        _check_base_readable(where, base)
        inherited = read_space_document(base, here)
        _space_from_document(base, inherited)  # validated on its own: its errors name it
        merged = {"params": {**merged["params"], **inherited["params"]},
                  "search": {**merged["search"], **(inherited.get("search") or {})},
                  "starts": merged["starts"] + list(inherited.get("starts") or [])}
    if not bases:
        return raw
    own_search, own_starts = raw.get("search"), raw.get("starts")
    if not all(isinstance(v, t) for v, t in ((own_search or {}, dict), (own_starts or [], list))):
        return raw  # malformed: reported by load_space with this file's name
    return {"params": {**merged["params"], **raw["params"]}, "search": {**merged["search"], **(own_search or {})},
            "starts": merged["starts"] + list(own_starts or [])}


def _check_base_readable(where: str, base: Path) -> None:
    """A space's ``extends`` names a file that can be read; the error names the space that extends it too,
    with the closest YAML file beside it (a typo)."""
    try:
        with open(base, "rb"):
            pass
    except OSError as error:
        siblings = sorted(p.name for p in base.parent.glob("*.yaml")) if base.parent.is_dir() else []
        close = difflib.get_close_matches(base.name, siblings, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"{where}: key 'extends': {shown(base)} cannot be read "
                          f"({error.strerror or type(error).__name__}){hint}") from None


def load_space(path: str | Path, *, _chain: tuple[Path, ...] = ()) -> SearchSpace:
    """Read and validate a search-space file; every problem is a one-line ConfigError naming file and key."""
    path = Path(path)
    return _space_from_document(path, read_space_document(path, _chain))


def _space_from_document(path: Path, raw: dict[str, Any]) -> SearchSpace:
    """The validated space of the file at ``path``, whose mapping (its bases merged in) is ``raw``."""
    where = str(path)
    types = _field_types()
    specs: list[ParamSpec] = []
    for name, spec_raw in raw["params"].items():
        if name not in types:
            raise unknown_key(name, list(types), where)
        spec = _parse_spec(where, name, spec_raw, types, {s.name: s for s in specs})
        if name in CACHE_FIELDS and (spec.kind != "fixed" or spec.when):
            raise ConfigError(f"{where}: key '{name}' cannot be searched: it decides the shared image cache")
        specs.append(spec)
    search = {} if raw.get("search") is None else raw["search"]
    if not isinstance(search, dict):
        raise ConfigError(f"{where}: 'search' must be a mapping, got {short(search)}")
    search = check_values(search, where, label=lambda key: f"key 'search.{key}'")
    space = SearchSpace(path.resolve(), tuple(specs), dict(search), ())
    starts = [] if raw.get("starts") is None else raw["starts"]
    if not isinstance(starts, list) or not all(isinstance(s, dict) for s in starts):
        raise ConfigError(f"{where}: 'starts' must be a list of mappings")
    checked = []
    for number, start in enumerate(starts, start=1):
        point = space.point_in_space(start)
        if point is None or set(start) - {s.name for s in specs}:
            raise ConfigError(f"{where}: starts[{number}] {short(start)} does not lie in the space")
        checked.append(point)
    return SearchSpace(space.path, space.params, space.search, tuple(checked))
