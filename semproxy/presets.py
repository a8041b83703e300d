"""The configs semproxy ships (package data: the repository's ``experiments/``), by dataset.

What a search, a final training and the synthetic generator start from when given no config: the
synthetic demo for ``synthetic``, else the paper code's ViT-S setting of the dataset.
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from .config import Config

__all__ = ["EXPERIMENTS", "default_base_config"]

EXPERIMENTS = Path(str(files("semproxy") / "experiments"))


def default_base_config(dataset: str) -> tuple[Config, str]:
    """The shipped config of ``dataset`` and its file (the default config where none is shipped)."""
    path = EXPERIMENTS / ("synthetic.yaml" if dataset == "synthetic" else f"{dataset}_vit_s.yaml")
    if path.is_file():
        return Config.load(path), str(path)
    return Config().replace({"dataset": dataset}), "the default config"
