"""Typed config fields: a dataclass field with a description and range, checked by one validator.

Supported field types: ``int``, ``float`` (finite), ``bool``, ``str``, ``Literal[...]`` and
``Optional[...]`` of those. Errors are one line, naming where the value came from and the key.

YAML is read with :func:`read_yaml` (files) and :func:`parse_scalar` (command-line values): a
``yaml.SafeLoader`` that also bounds what a small file can make it do (size, nesting, alias
expansion, value length) and refuses a key given twice in one mapping. Merge keys (``<<: *base``)
are accepted; a key given explicitly beside a merge overrides the merged value.
"""
from __future__ import annotations

import codecs
import dataclasses
import math
import typing
from dataclasses import field
from typing import Any, Callable, Literal, Union

import yaml
from yaml.composer import ComposerError
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from .errors import MAX_MESSAGE, ConfigError, did_you_mean, first_line, one_line, short

__all__ = ["first_line", "ConfigError", "knob", "fields_with_role", "validate", "unknown_key", "parse_scalar",
           "field_names", "coerce", "read_yaml", "short", "one_line", "MAX_MESSAGE", "MAX_FILE_BYTES"]

#: Largest YAML file read. A config or a search space is a few KB; anything near this is a mistake.
MAX_FILE_BYTES = 1 << 20
# What one YAML document may expand to. Alias trees ("billion laughs") are refused before they are
# constructed, deep nesting before it exhausts the composer's recursion.
MAX_YAML_NODES = 10_000     # values after alias expansion (a shipped space has ~100)
MAX_YAML_ALIASES = 100
MAX_YAML_DEPTH = 50         # a space nests 4 deep
MAX_YAML_SCALAR = 4096      # characters of one value: a path fits, a number stays below int()'s digit limit


def knob(default: Any, help: str, *, low: float | None = None, high: float | None = None,
         roles: tuple[str, ...] = ()) -> Any:
    """A dataclass field with a description, an optional inclusive range [low, high], and roles.

    A role is a property other parts of the code ask of fields by name (e.g. which fields may change
    when a run resumes): declared here, on the field, rather than in lists kept elsewhere.
    """
    return field(default=default, metadata={"help": help, "low": low, "high": high, "roles": frozenset(roles)})


def fields_with_role(section: type, role: str) -> frozenset[str]:
    """The names of ``section``'s fields that declare ``role``."""
    return frozenset(f.name for f in dataclasses.fields(section) if role in f.metadata.get("roles", ()))


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
        try:
            value = float(value)  # an int too large for a float overflows
        except OverflowError:
            return False, value
        return math.isfinite(value), value
    if tp is str:
        return isinstance(value, str), value
    raise TypeError(f"unsupported config type {tp!r}")


def _key_label(name: str) -> str:
    return f"key '{name}'"


def validate(section: Any, *, where: str = "config", label: Callable[[str], str] = _key_label) -> Any:
    """Check every field of a dataclass instance for type and range, converting int -> float.

    Raises ConfigError naming ``where`` and the field as ``label`` renders it (a file's key by
    default; a command-line flag where the value came from one). Returns the instance for chaining.
    """
    hints = typing.get_type_hints(type(section))
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        ok, value = coerce(value, hints[f.name])
        if not ok:
            raise ConfigError(f"{where}: {label(f.name)} must be {_type_name(hints[f.name])}, got {short(value)}")
        low, high = f.metadata.get("low"), f.metadata.get("high")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if low is not None and value < low or high is not None and value > high:
                bounds = f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
                raise ConfigError(f"{where}: {label(f.name)} must be in {bounds}, got {short(value)}")
        setattr(section, f.name, value)
    return section


def unknown_key(key: Any, valid: list[str], where: str) -> ConfigError:
    """The error for a key that is none of ``valid``, suggesting the closest name."""
    return ConfigError(f"{where}: unknown key {short(key)}{did_you_mean(key, valid)}")


def parse_scalar(text: str, where: str = "--set") -> Any:
    """Parse a command-line value the way YAML would (numbers, booleans, null, strings).

    Read like a file (safe, bounded); a malformed value is a ConfigError naming ``where``.
    """
    value = _load_yaml(text, where) if text.strip() else ""
    if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
        try:
            return float(value)
        except ValueError:
            return value
    return value


MERGE_TAG = "tag:yaml.org,2002:merge"


def _refuse(condition: bool, problem: str, mark) -> None:
    if condition:
        raise ComposerError(None, None, problem, mark)


class BoundedLoader(yaml.SafeLoader):
    """yaml.SafeLoader within the MAX_YAML_* limits, refusing a key given twice in one mapping.

    The limits hold while composing (nodes, aliases, nesting: the composer recurses) and over
    the composed tree with every alias expanded (:meth:`check_tree`), before anything is
    constructed: a billion-laughs alias tree is refused after at most MAX_YAML_NODES visits.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = self.nodes = self.aliases = 0

    def compose_node(self, parent, index):
        mark = self.peek_event().start_mark
        self.aliases += self.check_event(yaml.AliasEvent)
        self.nodes += 1
        self.depth += 1
        try:
            _refuse(self.aliases > MAX_YAML_ALIASES, f"more than {MAX_YAML_ALIASES} aliases", mark)
            _refuse(self.nodes > MAX_YAML_NODES, f"more than {MAX_YAML_NODES} values", mark)
            _refuse(self.depth > MAX_YAML_DEPTH, f"nested deeper than {MAX_YAML_DEPTH} levels", mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def check_tree(self, root) -> None:
        """Walk the tree as construction would (aliases expanded): bound its size, depth and
        values, and check each mapping's keys (single values, none given twice)."""
        stack, visits, checked = [(root, 1)], 0, set()
        while stack:
            node, depth = stack.pop()
            visits += 1
            _refuse(visits > MAX_YAML_NODES, f"aliases expand to more than {MAX_YAML_NODES} values",
                    node.start_mark)
            _refuse(depth > MAX_YAML_DEPTH, f"nested deeper than {MAX_YAML_DEPTH} levels", node.start_mark)
            if isinstance(node, ScalarNode):
                _refuse(len(node.value) > MAX_YAML_SCALAR,
                        f"a value longer than {MAX_YAML_SCALAR} characters", node.start_mark)
                continue
            if isinstance(node, MappingNode) and id(node) not in checked:
                checked.add(id(node))
                self.check_keys(node)
            children = node.value if isinstance(node, SequenceNode) else [n for pair in node.value for n in pair]
            stack.extend((child, depth + 1) for child in children)

    @staticmethod
    def check_keys(node) -> None:
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == MERGE_TAG:  # `<<: *base`: merged keys may be overridden here
                continue
            _refuse(not isinstance(key_node, ScalarNode), "a mapping key must be a single value, "
                    f"not a {'list' if isinstance(key_node, SequenceNode) else 'mapping'}", key_node.start_mark)
            key = (key_node.tag, key_node.value)
            _refuse(key in seen, f"key {short(key_node.value)} given twice", key_node.start_mark)
            seen.add(key)


def _load_yaml(text: str, where: str) -> Any:
    """Parse one YAML document with :class:`BoundedLoader`; any problem is a one-line ConfigError."""
    try:
        loader = BoundedLoader(text)  # the reader refuses control characters here
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            loader.check_tree(node)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or getattr(error, "context", None) or first_line(error)
        raise ConfigError(f"{where}: invalid YAML{at}: {problem}") from None
    except ValueError as error:  # PyYAML lets Python's own errors through, e.g. for the date 2001-13-45
        raise ConfigError(f"{where}: invalid YAML: {first_line(error)}") from None


# Byte-order marks of the encodings a YAML file is most often saved in by mistake (UTF-32 first:
# its little-endian mark begins with UTF-16's).
_BOMS = {codecs.BOM_UTF32_LE: "UTF-32", codecs.BOM_UTF32_BE: "UTF-32", codecs.BOM_UTF16_LE: "UTF-16",
         codecs.BOM_UTF16_BE: "UTF-16"}


def _decode(data: bytes, where: str, what: str) -> str:
    """UTF-8 text (a UTF-8 byte-order mark allowed); other encodings and binary files are refused."""
    encoding = next((name for bom, name in _BOMS.items() if data.startswith(bom)), None)
    if encoding:
        raise ConfigError(f"{where}: the {what} is {encoding} text; save it as UTF-8")
    if b"\0" in data:
        raise ConfigError(f"{where}: the {what} is not text (a NUL byte at offset {data.index(0)}: a binary "
                          f"file, or UTF-16 without a byte-order mark?)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{where}: the {what} is not UTF-8 text (byte 0x{data[error.start]:02x} at offset "
                          f"{error.start})") from None


def read_yaml(path, what: str) -> Any:
    """Parse a YAML file safely (bounded, no repeated keys); errors are one-line ConfigErrors naming the file."""
    try:
        with open(path, "rb") as handle:  # closed at once, not when collected
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        raise ConfigError(f"{path}: cannot read {what} ({error.strerror or error})") from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"{path}: the {what} is larger than {MAX_FILE_BYTES >> 20} MiB (a {what} is a few KB)")
    return _load_yaml(_decode(data, str(path), what), str(path))
