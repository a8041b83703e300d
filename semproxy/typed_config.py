"""Typed config fields: a dataclass field with a description and range, checked by one validator.

Supported field types: ``int``, ``float`` (finite), ``bool``, ``str``, ``Literal[...]`` and
``Optional[...]`` of those. Errors are one line, naming where the value came from and the key.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import field
from typing import Any, Literal, Union

__all__ = ["first_line", "ConfigError", "knob", "validate", "unknown_key", "parse_scalar", "field_names", "coerce", "read_yaml"]


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type where it has none), for one-line errors."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type, or out of range (one-line message)."""


def knob(default: Any, help: str, *, low: float | None = None, high: float | None = None) -> Any:
    """A dataclass field with a description and an optional inclusive range [low, high]."""
    return field(default=default, metadata={"help": help, "low": low, "high": high})


def field_names(section: type) -> list[str]:
    return [f.name for f in dataclasses.fields(section)]


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is Union:
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any) -> tuple[bool, Any]:
    """Return (ok, value) with value converted to ``tp`` where that loses nothing (int -> float)."""
    origin = typing.get_origin(tp)
    if origin is Union:
        for arg in typing.get_args(tp):
            if arg is type(None):
                if value is None:
                    return True, None
                continue
            ok, out = coerce(value, arg)
            if ok:
                return True, out
        return False, value
    if origin is Literal:
        return (value in typing.get_args(tp) and type(value) in {type(a) for a in typing.get_args(tp)}), value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False, value
        return math.isfinite(value), float(value)
    if tp is str:
        return isinstance(value, str), value
    raise TypeError(f"unsupported config type {tp!r}")


def validate(section: Any, *, where: str = "config") -> Any:
    """Check every field of a dataclass instance for type and range, converting int -> float.

    Raises ConfigError naming ``where`` and the key. Returns the instance for chaining.
    """
    hints = typing.get_type_hints(type(section))
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        ok, value = coerce(value, hints[f.name])
        if not ok:
            raise ConfigError(f"{where}: key '{f.name}' must be {_type_name(hints[f.name])}, got {value!r}")
        low, high = f.metadata.get("low"), f.metadata.get("high")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if low is not None and value < low or high is not None and value > high:
                bounds = f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
                raise ConfigError(f"{where}: key '{f.name}' must be in {bounds}, got {value!r}")
        setattr(section, f.name, value)
    return section


def unknown_key(key: str, valid: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return ConfigError(f"{where}: unknown key '{key}'{hint}")


def parse_scalar(text: str) -> Any:
    """Parse a command-line value the way YAML would (numbers, booleans, null, strings)."""
    import yaml

    value = yaml.safe_load(text) if text.strip() else ""
    if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _unique_key_loader():
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        """yaml.SafeLoader, except that a key given twice in one mapping is an error, not an override."""

        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"key '{key}' given twice",
                                                            key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep)

    return UniqueKeyLoader


def read_yaml(path, what: str) -> Any:
    """Parse a YAML file safely (no repeated keys); errors are one-line ConfigErrors naming the file."""
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:  # closed at once, not when collected
            text = handle.read()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read {what} ({error.strerror or error})") from None
    try:
        return yaml.load(text, Loader=_unique_key_loader())  # a SafeLoader: no arbitrary objects
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: invalid YAML{at}: {getattr(error, 'problem', error)}") from None
