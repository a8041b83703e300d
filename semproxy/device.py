"""The torch device of a run: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, checked against the machine."""
from __future__ import annotations

import torch

from .config import check_device
from .errors import ConfigError

__all__ = ["resolve_device"]


def resolve_device(name: str, where: str = "config") -> torch.device:
    """The torch device of a ``device`` setting: 'auto' is the current CUDA device when there is one, else the CPU.

    Raises ConfigError naming ``where`` and 'device' for a name not of the form 'auto', 'cpu', 'cuda'
    or 'cuda:N', or for a GPU this machine does not have (saying which it has).
    """
    if check_device(name, where) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    index = int(name.partition(":")[2] or 0)  # not torch.device(name).index: it wraps at 256 (cuda:1234 -> -46)
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if index >= count:
        present = "only " + ", ".join(f"cuda:{i}" for i in range(count)) if count else "no CUDA device"
        raise ConfigError(f"{where}: key 'device' is '{name}' but this machine has {present}; use 'cpu' or 'auto'")
    return torch.device(name)
