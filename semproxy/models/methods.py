"""The fine-tuning methods as data: what each one adds and trains (method.md section 1)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from ..errors import ConfigError

__all__ = ["MethodSpec", "METHODS", "get_method"]


@dataclass(frozen=True)
class MethodSpec:
    """What a method trains besides the embedding head and the proxies.

    Attributes:
        name: the config's ``method`` value.
        train_backbone: every backbone weight is trained (full fine-tuning).
        prompts: deep visual prompts on the sample branch.
        adapters: AdaptFormer adapters in the last ``adapter_layers`` blocks.
        accumulator: the semantic-proxy accumulator, or None for ordinary proxies only.
        bitfit: backbone biases are never trained beyond ``train_backbone`` ("never"), trained when
            the config's ``bitfit`` is on ("optional"), or always ("always").
    """

    name: str
    train_backbone: bool = False
    prompts: bool = False
    adapters: bool = False
    accumulator: Optional[str] = None
    bitfit: Literal["never", "optional", "always"] = "never"

    def trains_biases(self, bitfit_flag: bool) -> bool:
        return self.bitfit == "always" or (self.bitfit == "optional" and bitfit_flag)


METHODS: dict[str, MethodSpec] = {spec.name: spec for spec in (
    MethodSpec("full", train_backbone=True),
    MethodSpec("linear"),
    MethodSpec("bitfit", bitfit="always"),
    MethodSpec("adapter", adapters=True, bitfit="optional"),
    MethodSpec("vpt", prompts=True, bitfit="optional"),
    MethodSpec("vptsp_ema", prompts=True, accumulator="ema", bitfit="optional"),
    MethodSpec("vptsp_gru", prompts=True, accumulator="gru", bitfit="optional"),
)}


def get_method(name: str) -> MethodSpec:
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown method '{name}' (expected one of {', '.join(METHODS)})") from None
