"""The configs semproxy ships (package data: the repository's ``experiments/``), by dataset.

What a search, a final training and the synthetic generator start from when given no config: the
synthetic demo for ``synthetic``, else the paper code's ViT-S setting of the dataset.
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from .config import Config
from .errors import shown

__all__ = ["EXPERIMENTS", "default_base_config"]

EXPERIMENTS = Path(str(files("semproxy") / "experiments"))


def default_base_config(dataset: str) -> tuple[Config, str]:
    """The shipped config of ``dataset`` and its file; where none ships (iNaturalist, which the paper
    code ran with ViT-B only), the default config for the dataset, and where its ViT-B setting is."""
    path = EXPERIMENTS / ("synthetic.yaml" if dataset == "synthetic" else f"{dataset}_vit_s.yaml")
    if path.is_file():
        return Config.load(path), str(path)
    vit_b = EXPERIMENTS / f"{dataset}_vit_b.yaml"
    hint = f"; --config {shown(vit_b)} is the paper code's ViT-B setting" if vit_b.is_file() else ""
    return Config().replace({"dataset": dataset}), f"the default config (no {path.name} ships{hint})"
