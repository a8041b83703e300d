"""The names of the metrics a run reports, in one place.

:func:`semproxy.metrics.retrieval_metrics` returns names such as ``recall@1`` and ``map@r``; a run
reports them per split with flat names that Tune, TensorBoard and CSV files take as they are
(``val_map_at_r``). The search objective and the columns shown first are named here too.
"""
from __future__ import annotations

__all__ = ["split_metrics", "metric_name", "OBJECTIVE", "OBJECTIVE_MODE", "BEST_OBJECTIVE", "SHOWN_FIRST"]


def metric_name(split: str, name: str) -> str:
    """``('val', 'map@r')`` -> ``'val_map_at_r'``."""
    return f"{split}_{name.replace('@', '_at_')}"


def split_metrics(split: str, metrics: dict[str, float]) -> dict[str, float]:
    """A split's metrics under their flat names, as floats."""
    return {metric_name(split, k): float(v) for k, v in metrics.items()}


#: What a search maximises: validation MAP@R.
OBJECTIVE = metric_name("val", "map@r")
OBJECTIVE_MODE = "max"
#: A search trial's best objective so far (reported each epoch: TensorBoard's hparams view shows a
#: trial's last reported values, and this one's last is the trial's best).
BEST_OBJECTIVE = f"best_{OBJECTIVE}"
#: The columns Tune's progress table shows first: the objective, validation R@1, the training loss.
SHOWN_FIRST = (OBJECTIVE, metric_name("val", "recall@1"), "loss")
