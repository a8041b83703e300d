"""Optimisers and the learning-rate schedule of a run.

One optimiser kind (SGD with momentum, Adam or AdamW) for everything trained, in two parameter
groups (encoder side at ``lr``, proxies at ``lr_proxy``), plus the class-prompt bank's row-sparse
optimiser of the same kind at ``lr``. All follow one schedule per epoch: linear warm-up, then a
cosine decay from each group's rate to ``lr_min`` over ``cosine_epochs`` (the rest of the run by
default), as torch's ``CosineAnnealingLR(T_max=cosine_epochs, eta_min=lr_min)`` stepped per epoch
(what the paper code ran; its CUB setting spans 50 epochs of a 15-epoch run, so the rate ends at 82%).

:meth:`Optimizers.minimise` is the optimisation half of a training step: the gradients of the loss
(``torch.autograd.grad``, nothing accumulates in ``.grad``), clipping by their joint norm, and both
updates. The dense update is torch's own multi-tensor (``foreach``) algorithm, called through its
functional form (``torch.optim.sgd.sgd``, ``adam.adam``, ``adamw.adamw``) on the state of a torch
optimiser, which keeps the parameter groups, the schedules and the ``state_dict``: one kernel per
operation for all parameters instead of one per parameter, numerically identical to torch's
per-parameter loop. ``Optimizer.step`` itself is not called because it breaks a compiled graph on
purpose (torch/optim/optimizer.py); the functional form traces into the step's one graph. Every
state tensor exists from the start (torch creates them at the first step), so a captured step finds
them in place. For a compiled step (``compiled=True``) Adam's step counts live on the device
(``capturable``) and the learning rates are a device tensor, refreshed when the schedule moves: a
float would be a constant of the graph, recompiled at every change.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch.optim.adam import adam
from torch.optim.adamw import adamw
from torch.optim.lr_scheduler import LambdaLR
from torch.optim.sgd import sgd

from .config import OptimConfig
from .models import PromptedViT
from .models.row_optim import RowSparseOptimizer

__all__ = ["Optimizers", "build_optimizers", "lr_factor", "group_schedule", "OptimizerKind", "OPTIMIZERS"]

Lr = float | torch.Tensor


def lr_factor(epoch: int, epochs: int, warmup_epochs: int, cosine_epochs: Optional[int] = None) -> float:
    """Where epoch ``epoch`` (0-based) stands in the schedule: during warm-up the multiplier of the base
    rate, after it the cosine's weight of the base rate against the floor (1 at its start, 0 at its
    end). The cosine spans ``cosine_epochs``, else the epochs after the warm-up; past its end it climbs
    again, as torch's ``CosineAnnealingLR`` does (the paper code's Cars ViT-B run trains 60 epochs on a
    50-epoch cosine)."""
    if epoch < warmup_epochs:
        return (epoch + 1) / (warmup_epochs + 1)
    span = max(1, cosine_epochs if cosine_epochs is not None else epochs - warmup_epochs)
    return 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup_epochs) / span))


def group_schedule(base_lr: float, cfg: OptimConfig) -> Callable[[int], float]:
    """The multiplier of a group's ``base_lr`` per epoch (a ``LambdaLR`` lambda): the warm-up scales the
    base rate, the cosine moves it to the absolute floor ``lr_min`` (the same for every group). A group
    whose rate is 0 stays at 0 (a multiplier cannot lift it to the floor, as torch's would)."""

    def factor(epoch: int) -> float:
        weight = lr_factor(epoch, cfg.epochs, cfg.warmup_epochs, cfg.cosine_epochs)
        if epoch < cfg.warmup_epochs or base_lr == 0:
            return weight
        return (cfg.lr_min + (base_lr - cfg.lr_min) * weight) / base_lr

    return factor


# -- the optimiser kinds ---------------------------------------------------------------------------
def _sgd_state(param: torch.Tensor, group: dict, capturable: bool) -> dict[str, torch.Tensor]:
    # A zero buffer: momentum * 0 + grad is exactly torch's first-step copy of the gradient.
    return {"momentum_buffer": torch.zeros_like(param)} if group["momentum"] else {}


def _adam_state(param: torch.Tensor, group: dict, capturable: bool) -> dict[str, torch.Tensor]:
    # torch keeps the step count on the host unless capturable (then beside the parameter, as here).
    step = torch.zeros((), dtype=torch.float32, device=param.device if capturable else "cpu")
    return {"step": step, "exp_avg": torch.zeros_like(param), "exp_avg_sq": torch.zeros_like(param)}


def _sgd_update(params: list[torch.Tensor], grads: list[torch.Tensor], states: list[dict], group: dict, lr: Lr,
                capturable: bool) -> None:
    buffers = [state["momentum_buffer"] for state in states] if group["momentum"] else []
    sgd(params, grads, buffers, foreach=True, weight_decay=group["weight_decay"], momentum=group["momentum"], lr=lr,
        dampening=group["dampening"], nesterov=group["nesterov"], maximize=group["maximize"])


def _adam_update(functional: Callable, params: list[torch.Tensor], grads: list[torch.Tensor], states: list[dict],
                 group: dict, lr: Lr, capturable: bool) -> None:
    beta1, beta2 = group["betas"]
    functional(params, grads, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states], [],
               [s["step"] for s in states], foreach=True, capturable=capturable, amsgrad=False, beta1=beta1,
               beta2=beta2, lr=lr, weight_decay=group["weight_decay"], eps=group["eps"], maximize=group["maximize"])


@dataclass(frozen=True)
class OptimizerKind:
    """One value of ``optimizer``: torch's optimiser (groups, state, ``state_dict``), how to create the
    state of one parameter, and torch's functional multi-tensor update of one group."""

    build: Callable[[list[dict], OptimConfig], torch.optim.Optimizer]
    state: Callable[[torch.Tensor, dict, bool], dict[str, torch.Tensor]]
    update: Callable[[list[torch.Tensor], list[torch.Tensor], list[dict], dict, Lr, bool], None]


OPTIMIZERS: dict[str, OptimizerKind] = {
    "sgd": OptimizerKind(
        lambda groups, cfg: torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                                            foreach=True),
        _sgd_state, _sgd_update),
    "adam": OptimizerKind(
        lambda groups, cfg: torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True),
        _adam_state, lambda *args: _adam_update(adam, *args)),
    "adamw": OptimizerKind(
        lambda groups, cfg: torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True),
        _adam_state, lambda *args: _adam_update(adamw, *args)),
}


class _ScalerView:
    """Gradients and an update as a GradScaler sees an optimiser: ``param_groups`` whose ``.grad`` it
    unscales and checks for inf, and ``step``, which it calls only when they are finite. Each view
    decides on its own gradients: PyTorch's rule for several optimisers under one scaler."""

    def __init__(self, tensors: list[torch.Tensor], update: Callable[[], None]) -> None:
        self.param_groups, self.step = [{"params": tensors}], update


# -- the optimisers of a run -------------------------------------------------------------------------
@dataclass
class Optimizers:
    """The dense optimiser, the bank's (vptsp only) and their schedules, stepped together."""

    dense: torch.optim.Optimizer
    bank: Optional[RowSparseOptimizer]
    schedules: list[LambdaLR]
    kind: OptimizerKind
    grad_clip: Optional[float] = None
    capturable: bool = False  # for a compiled step: Adam's step counts and the learning rates on the device
    lrs: Optional[torch.Tensor] = field(default=None, init=False)  # (groups [+ bank],) when capturable
    trained: list[torch.Tensor] = field(init=False)                # the dense parameters, group by group

    def __post_init__(self) -> None:
        self.trained = [p for group in self.dense.param_groups for p in group["params"]]
        self._place_state()

    def minimise(self, loss: torch.Tensor, rows: Optional[torch.Tensor] = None, classes: Optional[torch.Tensor] = None,
                 scaler: Optional[torch.amp.GradScaler] = None) -> None:
        """Gradients of ``loss``, clipped by their joint norm, then both updates.

        ``rows``: the class-prompt rows the forward gathered (a leaf), of the classes ``classes`` (on the
        bank's storage device). Under a GradScaler (fp16) the gradients are unscaled first and each
        optimiser steps only when its own are finite; otherwise nothing here syncs with the device.
        """
        tensors = self.trained + ([rows] if rows is not None else [])
        grads = list(torch.autograd.grad(scaler.scale(loss) if scaler is not None else loss, tensors,
                                         allow_unused=True))
        if scaler is not None:
            self._scaled_updates(scaler, tensors, grads, rows, classes)
            return
        self._clip(grads)
        self._update_dense(grads)
        self._update_bank(rows, classes, grads[-1])

    def _scaled_updates(self, scaler: torch.amp.GradScaler, tensors: list[torch.Tensor], grads: list,
                        rows: Optional[torch.Tensor], classes: Optional[torch.Tensor]) -> None:
        """fp16: unscale (and check) through the scaler's own API, which reads ``.grad``, then clip and step."""
        for tensor, grad in zip(tensors, grads):
            tensor.grad = grad
        views = [_ScalerView(self.trained, lambda: self._update_dense(grads))]
        if self.bank is not None and rows is not None:
            views.append(_ScalerView([rows], lambda: self._update_bank(rows, classes, grads[-1])))
        for view in views:
            scaler.unscale_(view)
        self._clip(grads)
        for view in views:
            scaler.step(view)
        for tensor in tensors:
            tensor.grad = None

    def _clip(self, grads: list[Optional[torch.Tensor]]) -> None:
        """Scale every gradient by grad_clip / their joint norm when that is below 1 (torch's clip_grad_norm_)."""
        if self.grad_clip is None:
            return
        present = [g for g in grads if g is not None]
        norm = torch.nn.utils.get_total_norm(present, foreach=True)
        torch._foreach_mul_(present, torch.clamp(self.grad_clip / (norm + 1e-6), max=1.0))

    @torch.no_grad()
    def _update_dense(self, grads: list[Optional[torch.Tensor]]) -> None:
        start = 0
        for index, group in enumerate(self.dense.param_groups):
            count = len(group["params"])
            pairs = [(p, g) for p, g in zip(group["params"], grads[start:start + count]) if g is not None]
            start += count
            if pairs:
                params, present = [p for p, _ in pairs], [g for _, g in pairs]
                self.kind.update(params, present, [self.dense.state[p] for p in params], group, self._lr(index),
                                 self.capturable)

    def _update_bank(self, rows: Optional[torch.Tensor], classes: Optional[torch.Tensor],
                     grad: Optional[torch.Tensor]) -> None:
        if self.bank is not None and rows is not None:
            self.bank.update(classes, [rows], [grad], lr=self.lrs[-1] if self.lrs is not None else None)

    def _lr(self, index: int) -> Lr:
        return self.lrs[index] if self.lrs is not None else self.dense.param_groups[index]["lr"]

    def _optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.dense] + ([self.bank] if self.bank is not None else [])

    def _place_state(self) -> None:
        """Every dense state tensor in place (created now if missing: torch creates them at the first
        step), Adam's step counts where the mode wants them; the lrs tensor in step with the groups."""
        for group in self.dense.param_groups:
            for param in group["params"]:
                state = self.dense.state[param]
                if not state:  # a kind's state is created whole (torch's and ours), so empty is the only gap
                    state.update(self.kind.state(param, group, self.capturable))
                if "step" in state:
                    state["step"] = state["step"].to(param.device if self.capturable else "cpu", torch.float32)
        if self.capturable:
            values = torch.tensor([g["lr"] for o in self._optimizers() for g in o.param_groups], dtype=torch.float32)
            if self.lrs is None:
                self.lrs = values.to(self.trained[0].device)
            self.lrs.copy_(values)  # in place: a captured step reads it where it was

    def state_tensors(self) -> list[torch.Tensor]:
        """Every tensor a step mutates besides the parameters: optimiser states, the bank, the lrs."""
        tensors = [v for o in self._optimizers() for s in o.state.values() for v in s.values()
                   if isinstance(v, torch.Tensor)]
        tensors += self.bank.tables() if self.bank is not None else []
        return tensors + ([self.lrs] if self.lrs is not None else [])

    def end_epoch(self) -> None:
        with warnings.catch_warnings():  # the updates go through torch's functional form, which it cannot see
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
            for schedule in self.schedules:
                schedule.step()
        self._place_state()

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
        self._place_state()


def build_optimizers(model: PromptedViT, cfg: OptimConfig, *, compiled: bool = False) -> Optimizers:
    """Create the optimisers for ``model`` (call after moving it to its device).

    ``compiled``: for a step run through ``torch.compile`` (device-side step counts and lrs).
    """
    kind = OPTIMIZERS[cfg.optimizer]
    groups = [{"params": model.encoder_parameters(), "lr": cfg.lr},
              {"params": model.proxy_parameters(), "lr": cfg.lr_proxy}]
    dense = kind.build([g for g in groups if g["params"]], cfg)
    bank = None
    if model.semantic is not None and model.semantic.bank.tables():
        bank = model.semantic.bank.optimizer(cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum,
                                             weight_decay=cfg.weight_decay)

    schedules = [LambdaLR(dense, [group_schedule(g["lr"], cfg) for g in dense.param_groups])]
    if bank is not None:
        schedules.append(LambdaLR(bank, [group_schedule(g["lr"], cfg) for g in bank.param_groups]))
    return Optimizers(dense, bank, schedules, kind, cfg.grad_clip, capturable=compiled)
