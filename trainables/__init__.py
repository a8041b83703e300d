"""Ray Tune trainables: thin glue between a sampled config and ``semproxy.train.fit``."""
from .dml import finite_metrics, train_dml, trial_device

__all__ = ["train_dml", "trial_device", "finite_metrics"]
