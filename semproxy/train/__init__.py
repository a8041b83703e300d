"""Training: ``fit(config)`` and the :class:`Trainer` (``python -m semproxy.train``: the final-training command)."""
from .trainer import EpochResult, FitResult, NonFiniteLossError, Trainer, begin_run, fit

__all__ = ["fit", "begin_run", "Trainer", "EpochResult", "FitResult", "NonFiniteLossError"]
