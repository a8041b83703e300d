"""The fine-tuning methods, one module each, registered by name (method.md section 1).

Importing this package imports every method module; each registers itself with
:func:`register_method`, so :data:`METHODS` holds exactly the names the config's ``method`` accepts.
A new method is a new module here plus its import below (docs/extending.md).
"""
from .base import METHODS, BlockAddition, FineTuningMethod, PEFTMethod, get_method, is_bias, register_method
from . import full, linear, bitfit, adapter, vpt, vptsp, lora  # noqa: F401,E402 - each registers itself
from .adapter import Adapter

__all__ = ["METHODS", "FineTuningMethod", "PEFTMethod", "BlockAddition", "register_method", "get_method",
           "is_bias", "Adapter"]
