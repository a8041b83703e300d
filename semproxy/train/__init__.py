"""Training: ``fit(config)`` and the :class:`Trainer` (``python -m semproxy.train``: the final-training command)."""
from .trainer import EpochResult, FitResult, NonFiniteLossError, Trainer, fit

__all__ = ["fit", "Trainer", "EpochResult", "FitResult", "NonFiniteLossError"]
