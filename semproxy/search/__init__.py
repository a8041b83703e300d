"""The search: YAML spaces -> Optuna define-by-run, an ASHA-aware searcher, the driver, results and export."""
from .space import ParamSpec, SearchSpace, load_space, sample_params

__all__ = ["ParamSpec", "SearchSpace", "load_space", "sample_params"]
