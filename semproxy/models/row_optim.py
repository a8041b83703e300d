"""Row-sparse optimiser for per-class parameter tables (the class-prompt bank).

Only the rows of the classes in the current batch receive a gradient. A dense optimiser would still
move the absent rows (momentum, Adam's running averages, weight decay) and would need a dense
gradient of the whole table. This optimiser instead updates exactly the touched rows and keeps a
step count per row, so Adam's bias correction is that of the row's own history (the "lazy" Adam
semantics). A row that is present at every step follows ``torch.optim.SGD`` exactly and
``Adam``/``AdamW`` to rounding (their bias correction is folded in another order).

The tables and their state may live on another device than the compute (host offload): the touched
rows are gathered to the compute device, updated there and written back, the same arithmetic in
both placements. Every table's rows are updated by a fixed sequence of tensor operations, with no
host sync and no branch on their values, so a compiled training step traces it whole.
"""
from __future__ import annotations

from typing import Literal, Optional

import torch
from torch.optim import Optimizer

__all__ = ["RowSparseOptimizer", "RowAlgorithm"]

RowAlgorithm = Literal["sgd", "adam", "adamw"]


class RowSparseOptimizer(Optimizer):
    """SGD (momentum), Adam or AdamW over the touched rows of 2+-D tables.

    :meth:`update` takes the row indices, the gathered rows and their gradients (one per table, in
    order): the form a compiled step traces, with a tensor learning rate there (a float would be a
    constant of the graph). As a ``torch.optim.Optimizer`` (LR schedulers, ``state_dict``, a GradScaler)
    call :meth:`set_active` with the indices and the gathered rows (leaves that received gradients)
    before :meth:`step`. The state is created with the optimiser, not at its first step, so that a
    captured step finds every buffer in place.
    """

    def __init__(
            self,
            tables: list[torch.Tensor],
            algorithm: RowAlgorithm,
            lr: float,
            *,
            momentum: float = 0.9,
            betas: tuple[float, float] = (0.9, 0.999),
            eps: float = 1e-8,
            weight_decay: float = 0.0,
    ) -> None:
        if algorithm not in ("sgd", "adam", "adamw"):
            raise ValueError(f"row optimiser: unknown algorithm '{algorithm}' (expected sgd, adam, adamw)")
        defaults = dict(lr=lr, momentum=momentum, betas=betas, eps=eps, weight_decay=weight_decay)
        super().__init__(tables, defaults)
        self.algorithm = algorithm
        self._index: torch.Tensor | None = None
        self._rows: list[torch.Tensor] = []
        for table in self.tables():
            self._state_for(table)

    def tables(self) -> list[torch.Tensor]:
        """The tables this optimiser updates, in order."""
        return [p for group in self.param_groups for p in group["params"]]

    def set_active(self, index: torch.Tensor, rows: list[torch.Tensor]) -> None:
        """Register the touched row indices and their gathered copies (one per table, in order)."""
        self._index, self._rows = index, list(rows)

    def load_state_dict(self, state_dict: dict) -> None:
        """Load as ``torch.optim.Optimizer`` does, then put every state tensor beside its table.

        Torch keeps a state entry named ``step`` where it was loaded (the CPU): right for its own
        scalar step counts, wrong for the per-row step table here, which must sit with its table
        (a GPU table would otherwise be indexed with a CPU table at the next step). Buffers of
        pinned (offloaded) tables are pinned again, so their copies stay asynchronous.
        """
        super().load_state_dict(state_dict)
        for table in self.tables():
            state = self.state.get(table, {})
            for name, value in state.items():
                if isinstance(value, torch.Tensor):
                    value = value.to(table.device)
                    state[name] = value.pin_memory() if table.is_pinned() and not value.is_pinned() else value

    def _state_for(self, table: torch.Tensor) -> dict[str, torch.Tensor]:
        state = self.state[table]
        if not state:
            state["step"] = torch.zeros(table.shape[0], dtype=torch.int64, device=table.device)
            names = ("momentum_buffer",) if self.algorithm == "sgd" else ("exp_avg", "exp_avg_sq")
            for name in names:
                buffer = torch.zeros_like(table)
                state[name] = buffer.pin_memory() if table.is_pinned() else buffer
        return state

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 - Optimizer API
        if closure is not None:
            raise ValueError("row optimiser: closures are not supported")
        if self._index is not None:
            self.update(self._index, self._rows, [rows.grad for rows in self._rows])
        self._index, self._rows = None, []
        return None

    @torch.no_grad()
    def update(self, index: torch.Tensor, rows: list[torch.Tensor], grads: list[Optional[torch.Tensor]],
               lr: Optional[torch.Tensor] = None) -> None:
        """Update rows ``index`` of each table from their gathered values ``rows`` and gradients ``grads``.

        ``lr``: a 0-d tensor used instead of the group's float (a compiled step's). A table whose
        gradient is None is left as it is. ``rows`` are the caller's own copies: they are updated in place.
        """
        groups = [group for group in self.param_groups for _ in group["params"]]
        for table, group, value, grad in zip(self.tables(), groups, rows, grads):
            if grad is not None:
                self._update_rows(table, group, index, value.detach(), grad, group["lr"] if lr is None else lr)

    def _update_rows(self, table: torch.Tensor, group: dict, index: torch.Tensor, param: torch.Tensor,
                     grad: torch.Tensor, lr: float | torch.Tensor) -> None:
        device = param.device
        host_index = index.to(table.device)
        state = self._state_for(table)

        def gather(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.index_select(0, host_index).to(device, non_blocking=True)

        def scatter(tensor: torch.Tensor, rows: torch.Tensor) -> None:
            # A copy back to the host must be complete before the host writes it into the table.
            tensor.index_copy_(0, host_index, rows.to(tensor.device, non_blocking=tensor.device.type != "cpu"))

        grad = grad.to(param.dtype)
        weight_decay = group["weight_decay"]
        step = gather(state["step"]) + 1
        if self.algorithm == "sgd":
            if weight_decay:
                grad = grad.add(param, alpha=weight_decay)
            if group["momentum"]:
                # A fresh row's buffer is zero, so momentum * 0 + grad equals torch's first-step copy.
                buffer = gather(state["momentum_buffer"]).mul_(group["momentum"]).add_(grad)
                scatter(state["momentum_buffer"], buffer)
                grad = buffer
            _descend_(param, grad, None, lr)
        else:
            beta1, beta2 = group["betas"]
            if weight_decay and self.algorithm == "adamw":
                param.mul_(1 - lr * weight_decay)
            elif weight_decay:
                grad = grad.add(param, alpha=weight_decay)
            exp_avg = gather(state["exp_avg"]).lerp_(grad, 1 - beta1)
            exp_avg_sq = gather(state["exp_avg_sq"]).mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            shape = (-1,) + (1,) * (param.dim() - 1)
            step64 = step.to(torch.float64)
            correction1 = (1 - beta1 ** step64).to(param.dtype).view(shape)
            correction2_sqrt = (1 - beta2 ** step64).sqrt().to(param.dtype).view(shape)
            denom = (exp_avg_sq.sqrt() / correction2_sqrt).add_(group["eps"])
            _descend_(param, exp_avg, denom * correction1, lr)
            scatter(state["exp_avg"], exp_avg)
            scatter(state["exp_avg_sq"], exp_avg_sq)
        scatter(state["step"], step)
        scatter(table, param)


def _descend_(param: torch.Tensor, numerator: torch.Tensor, denominator: Optional[torch.Tensor],
              lr: float | torch.Tensor) -> None:
    """param -= lr * numerator (/ denominator): with a float lr as torch's own optimisers round it; a
    tensor lr (a compiled step's) cannot be a kernel's scalar argument, so it multiplies instead."""
    if isinstance(lr, torch.Tensor):
        update = numerator * lr
        param.sub_(update if denominator is None else update / denominator)
    elif denominator is None:
        param.add_(numerator, alpha=-lr)
    else:
        param.addcdiv_(numerator, denominator, value=-lr)
