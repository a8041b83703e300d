"""BitFit (Ben Zaken et al. 2022): every backbone bias is trained, every weight frozen."""
from __future__ import annotations

from .base import FineTuningMethod, is_bias, register_method

__all__ = ["BitFit"]


@register_method("bitfit")
class BitFit(FineTuningMethod):
    """Trains the backbone's biases (whatever the config's ``bitfit``), the head and the proxies."""

    def trains_parameter(self, name: str) -> bool:
        return is_bias(name)
