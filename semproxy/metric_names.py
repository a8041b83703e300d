"""The names of the metrics a run reports, in one place.

:func:`semproxy.metrics.retrieval_metrics` returns names such as ``recall@1`` and ``map@r``; a run
reports them per split with flat names that Tune, TensorBoard and CSV files take as they are
(``val_map_at_r``). The search objective and the columns shown first are named here too.
"""
from __future__ import annotations

__all__ = ["split_metrics", "metric_name", "OBJECTIVE", "OBJECTIVE_MODE", "SHOWN_FIRST"]


def metric_name(split: str, name: str) -> str:
    """``('val', 'map@r')`` -> ``'val_map_at_r'``."""
    return f"{split}_{name.replace('@', '_at_')}"


def split_metrics(split: str, metrics: dict[str, float]) -> dict[str, float]:
    """A split's metrics under their flat names, as floats."""
    return {metric_name(split, k): float(v) for k, v in metrics.items()}


#: What a search maximises: validation MAP@R.
OBJECTIVE = metric_name("val", "map@r")
OBJECTIVE_MODE = "max"
#: The columns Tune's progress table shows first: the objective, validation R@1, the training loss.
SHOWN_FIRST = (OBJECTIVE, metric_name("val", "recall@1"), "loss")
