"""Typed configuration: the single source of truth for every parameter name.

Each section is a dataclass whose fields carry their type (``int``, ``float``, ``bool``, ``str``,
``Literal[...]`` or ``Optional[...]`` of those) and, in the field metadata, an allowed range and a
one-line description. Field names are unique across sections, so a flat name such as
``num_prompts`` addresses exactly one knob; search spaces, overrides and exports all speak these
names. Defaults follow the paper code's CUB-200 ViT-S/16 setting (method.md section 4).
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

__all__ = [
    "ConfigError",
    "ModelConfig",
    "LossConfig",
    "knob",
    "validate",
    "from_dict",
    "apply_overrides",
    "field_names",
]


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type, or out of range (one-line message)."""


def knob(default: Any, help: str, *, low: float | None = None, high: float | None = None) -> Any:
    """A dataclass field with a description and an optional inclusive range [low, high]."""
    return field(default=default, metadata={"help": help, "low": low, "high": high})


Method = Literal["full", "linear", "bitfit", "adapter", "vpt", "vptsp_ema", "vptsp_gru"]


@dataclass
class ModelConfig:
    """The prompted ViT, its fine-tuning method and the semantic proxies (method.md sections 1-2)."""

    backbone: str = knob("vit_small_patch16_224.augreg_in21k", "timm model name (optionally name.tag)")
    weights: Optional[str] = knob(None, "local weights file (.safetensors, .pth, .npz); None = hub/random")
    pretrained: bool = knob(True, "download pretrained weights from the hub when no weights file is given")
    img_size: Optional[int] = knob(None, "input size; None = the backbone's default", low=8)
    method: Method = knob("vptsp_gru", "fine-tuning method")
    bitfit: bool = knob(True, "also train every backbone bias (adapter, vpt, vptsp_*; the paper's (B))")
    embedding_dim: int = knob(384, "output embedding width E", low=1)
    # deep visual prompts
    num_prompts: int = knob(10, "VPT-deep prompts N at the first layer", low=0)
    prompt_depth: int = knob(12, "number of layers that get prompts", low=0)
    prompt_step: int = knob(0, "prompts lost per layer: layer i has max(N - i*step, 0)", low=0)
    # AdaptFormer adapters
    adapter_layers: int = knob(7, "adapters in the LAST this many blocks", low=0)
    adapter_dim: int = knob(256, "adapter bottleneck width d", low=1)
    adapter_position: Literal["parallel", "sequential"] = knob("parallel", "adapter beside or after the MLP")
    adapter_norm: Literal["pre", "post", "none"] = knob("pre", "adapter LayerNorm before/after it, or none")
    adapter_init: Literal["lora", "bert", "uniform"] = knob("lora", "adapter weight initialisation")
    adapter_scale: float = knob(0.1, "adapter output scale", low=0.0)
    adapter_dropout: float = knob(0.1, "dropout inside the adapter", low=0.0, high=1.0)
    # semantic proxies
    class_prompts: int = knob(3, "class prompts CLS-N at the first layer", low=0)
    class_prompt_depth: int = knob(12, "layers with class prompts CLS-L", low=0)
    class_prompt_step: int = knob(0, "class prompts lost per layer", low=0)
    proxy_prompts: Literal["class", "class+sample"] = knob("class", "prompts of the proxy pass")
    ema_keep: float = knob(0.8, "EMA keep ratio beta (vptsp_ema)", low=0.0, high=1.0)
    gru_activation: Literal["relu", "tanh"] = knob("relu", "GRU candidate activation (vptsp_gru)")
    gru_dropout: float = knob(0.0, "dropout on the GRU hidden state", low=0.0, high=1.0)
    proxy_bias_ratio: float = knob(0.5, "lambda: weight of the proxy bias in the fused proxy", low=0.0, high=1.0)
    normalise_bias: bool = knob(False, "L2-normalise the proxy bias before fusion")
    offload_class_prompts: bool = knob(False, "keep the class-prompt bank in host memory")


@dataclass
class LossConfig:
    """Proxy-Anchor (Kim et al. 2020), method.md section 3."""

    pa_alpha: float = knob(32.0, "Proxy-Anchor scale alpha", low=0.0)
    pa_delta: float = knob(0.1, "Proxy-Anchor margin delta", low=0.0)
    pa_pos_norm: Literal["positive", "all"] = knob(
        "positive", "divide the pull term by the proxies with positives, or by all (paper code)")


def field_names(section: type) -> list[str]:
    return [f.name for f in dataclasses.fields(section)]


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is Union:
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any) -> tuple[bool, Any]:
    """Return (ok, value) with value converted to ``tp`` where that loses nothing (int -> float)."""
    origin = typing.get_origin(tp)
    if origin is Union:
        for arg in typing.get_args(tp):
            if arg is type(None):
                if value is None:
                    return True, None
                continue
            ok, out = _coerce(value, arg)
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
        ok, value = _coerce(value, hints[f.name])
        if not ok:
            raise ConfigError(f"{where}: key '{f.name}' must be {_type_name(hints[f.name])}, got {value!r}")
        low, high = f.metadata.get("low"), f.metadata.get("high")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if low is not None and value < low or high is not None and value > high:
                bounds = f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
                raise ConfigError(f"{where}: key '{f.name}' must be in {bounds}, got {value!r}")
        setattr(section, f.name, value)
    return section


def _unknown_key(key: str, valid: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return ConfigError(f"{where}: unknown key '{key}'{hint}")


def from_dict(section: type, values: dict[str, Any], *, where: str = "config") -> Any:
    """Build and validate a config section from a mapping; unknown keys are an error."""
    valid = field_names(section)
    for key in values:
        if key not in valid:
            raise _unknown_key(str(key), valid, where)
    return validate(section(**values), where=where)


def _parse_scalar(text: str) -> Any:
    """Parse an override value the way YAML would (numbers, booleans, null, strings)."""
    import yaml

    value = yaml.safe_load(text) if text.strip() else ""
    if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
        try:
            return float(value)
        except ValueError:
            return value
    return value


def apply_overrides(section: Any, overrides: list[str], *, where: str = "--set") -> Any:
    """Return a copy of ``section`` with ``key=value`` overrides applied and validated."""
    valid = field_names(type(section))
    changes: dict[str, Any] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"{where}: expected key=value, got '{item}'")
        key = key.strip()
        if key not in valid:
            raise _unknown_key(key, valid, where)
        changes[key] = _parse_scalar(text)
    return validate(dataclasses.replace(section, **changes), where=where)
