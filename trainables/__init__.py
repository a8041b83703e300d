"""Ray Tune trainables: thin glue between a sampled config and ``semproxy.train.fit``.

The trainable lives in the library (:mod:`semproxy.search.trainable`), next to the driver that runs
it; this package keeps the name the project's layout gives it.
"""
from semproxy.search.trainable import finite_metrics, train_dml, trial_device

__all__ = ["train_dml", "trial_device", "finite_metrics"]
