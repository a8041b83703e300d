"""Optimisers and the learning-rate schedule of a run.

One optimiser kind (SGD with momentum, Adam or AdamW) for everything trained, in two parameter
groups (encoder side at ``lr``, proxies at ``lr_proxy``), plus the class-prompt bank's row-sparse
optimiser of the same kind at ``lr``. All follow one schedule per epoch: linear warm-up, then a
cosine decay to zero over the remaining epochs of the run.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch.optim.lr_scheduler import LambdaLR

from .config import OptimConfig
from .models import PromptedViT
from .models.row_optim import RowSparseOptimizer

__all__ = ["Optimizers", "build_optimizers", "lr_factor"]


def lr_factor(epoch: int, epochs: int, warmup_epochs: int) -> float:
    """Multiplier of the base learning rate during epoch ``epoch`` (0-based)."""
    if epoch < warmup_epochs:
        return (epoch + 1) / (warmup_epochs + 1)
    span = max(1, epochs - warmup_epochs)
    return 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup_epochs) / span))


def _dense(kind: str, groups: list[dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if kind == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


class _GatheredRows:
    """The class-prompt rows a batch gathered, as a GradScaler sees an optimiser.

    A GradScaler unscales (and checks for inf) the gradients of an optimiser's ``param_groups``; the
    bank's hold its tables, while the gradients are on the rows it gathered. Presented as their own
    optimiser, the rows are unscaled like the dense parameters and the bank steps only when they are
    finite: PyTorch's rule for several optimisers under one scaler (each decides on its own grads).
    """

    def __init__(self, bank: RowSparseOptimizer, rows: list[torch.Tensor]) -> None:
        self.bank = bank
        self.param_groups = [{"params": rows}]

    def step(self) -> None:
        self.bank.step()


@dataclass
class Optimizers:
    """The dense optimiser, the bank's (vptsp only) and their schedules, stepped together."""

    dense: torch.optim.Optimizer
    bank: Optional[RowSparseOptimizer]
    schedules: list[LambdaLR]
    _rows: Optional[_GatheredRows] = None

    def zero_grad(self) -> None:
        self.dense.zero_grad(set_to_none=True)

    def unscale(self, scaler: torch.amp.GradScaler, rows: list[torch.Tensor]) -> None:
        """Unscale the step's gradients (the dense parameters' and the gathered rows') before clipping."""
        scaler.unscale_(self.dense)
        with_grad = [r for r in rows if r.grad is not None]
        self._rows = _GatheredRows(self.bank, with_grad) if self.bank is not None and with_grad else None
        if self._rows is not None:
            scaler.unscale_(self._rows)

    def step(self, scaler: Optional[torch.amp.GradScaler] = None) -> None:
        """Step both optimisers; under a scaler each steps only when its gradients are finite."""
        if scaler is None:
            self.dense.step()
            if self.bank is not None:
                self.bank.step()
            return
        scaler.step(self.dense)
        if self._rows is not None:
            scaler.step(self._rows)
        self._rows = None

    def end_epoch(self) -> None:
        for schedule in self.schedules:
            schedule.step()

    @property
    def lr(self) -> float:
        return self.dense.param_groups[0]["lr"]

    def state_dict(self) -> dict:
        return {"dense": self.dense.state_dict(), "bank": self.bank.state_dict() if self.bank else None,
                "schedules": [s.state_dict() for s in self.schedules]}

    def load_state_dict(self, state: dict) -> None:
        self.dense.load_state_dict(state["dense"])
        if self.bank is not None:
            self.bank.load_state_dict(state["bank"])
        for schedule, saved in zip(self.schedules, state["schedules"]):
            schedule.load_state_dict(saved)


def build_optimizers(model: PromptedViT, cfg: OptimConfig) -> Optimizers:
    """Create the optimisers for ``model`` (call after moving it to its device)."""
    groups = [{"params": model.encoder_parameters(), "lr": cfg.lr},
              {"params": model.proxy_parameters(), "lr": cfg.lr_proxy}]
    dense = _dense(cfg.optimizer, [g for g in groups if g["params"]], cfg)
    bank = None
    if model.semantic is not None and model.semantic.bank.tables():
        bank = model.semantic.bank.optimizer(cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum,
                                             weight_decay=cfg.weight_decay)

    def factor(epoch: int) -> float:
        return lr_factor(epoch, cfg.epochs, cfg.warmup_epochs)

    schedules = [LambdaLR(dense, factor)] + ([LambdaLR(bank, factor)] if bank is not None else [])
    return Optimizers(dense, bank, schedules)
