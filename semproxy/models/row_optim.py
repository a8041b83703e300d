"""Row-sparse optimiser for per-class parameter tables (the class-prompt bank).

Only the rows of the classes in the current batch receive a gradient. A dense optimiser would still
move the absent rows (momentum, Adam's running averages, weight decay) and would need a dense
gradient of the whole table. This optimiser instead updates exactly the touched rows and keeps a
step count per row, so Adam's bias correction is that of the row's own history (the "lazy" Adam
semantics). A row that is present at every step follows ``torch.optim.SGD``/``Adam``/``AdamW``
exactly. The tables and their state may live on another device than the compute (host offload):
the touched rows are gathered to the compute device, updated there and written back, the same
arithmetic in both placements.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch.optim import Optimizer

__all__ = ["RowSparseOptimizer", "RowAlgorithm"]

RowAlgorithm = Literal["sgd", "adam", "adamw"]


class RowSparseOptimizer(Optimizer):
    """SGD (momentum), Adam or AdamW over the touched rows of 2+-D tables.

    Call :meth:`set_active` with the row indices and the gathered row tensors (leaves that received
    gradients) before :meth:`step`. It is a ``torch.optim.Optimizer``, so LR schedulers and
    ``state_dict`` work as usual.
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
        for table in (p for group in self.param_groups for p in group["params"]):
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
        if self._index is None:
            return None
        tables = [p for group in self.param_groups for p in group["params"]]
        groups = [group for group in self.param_groups for _ in group["params"]]
        for table, group, rows in zip(tables, groups, self._rows):
            if rows.grad is None:
                continue
            self._update_rows(table, group, rows.detach(), rows.grad)
        self._index, self._rows = None, []
        return None

    def _update_rows(self, table: torch.Tensor, group: dict, param: torch.Tensor, grad: torch.Tensor) -> None:
        device = param.device
        host_index = self._index.to(table.device)
        state = self._state_for(table)

        def gather(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.index_select(0, host_index).to(device, non_blocking=True)

        def scatter(tensor: torch.Tensor, rows: torch.Tensor) -> None:
            # A copy back to the host must be complete before the host writes it into the table.
            tensor.index_copy_(0, host_index, rows.to(tensor.device, non_blocking=tensor.device.type != "cpu"))

        param = param.clone()
        grad = grad.to(param.dtype)
        lr, weight_decay = group["lr"], group["weight_decay"]
        step = gather(state["step"]) + 1
        if self.algorithm == "sgd":
            if weight_decay:
                grad = grad.add(param, alpha=weight_decay)
            if group["momentum"]:
                # A fresh row's buffer is zero, so momentum * 0 + grad equals torch's first-step copy.
                buffer = gather(state["momentum_buffer"]).mul_(group["momentum"]).add_(grad)
                scatter(state["momentum_buffer"], buffer)
                grad = buffer
            param.add_(grad, alpha=-lr)
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
            param.addcdiv_(exp_avg, denom * correction1, value=-lr)
            scatter(state["exp_avg"], exp_avg)
            scatter(state["exp_avg_sq"], exp_avg_sq)
        scatter(state["step"], step)
        scatter(table, param)
