"""The class-prompt bank: per-class deep prompts that turn the frozen ViT into a proxy generator.

Layer ``i`` holds a (C, M_i, D) table, M_i = max(CLS-N - i * step, 0). Each training step gathers
the rows of the batch's classes to the compute device as fresh leaf tensors; after backward the
:class:`~semproxy.models.row_optim.RowSparseOptimizer` returned by :meth:`ClassPromptBank.optimizer`
updates just those rows. With ``offload=True`` the tables and their optimiser state stay in (pinned)
host memory, so device memory holds only the batch's rows whatever the number of classes; the
update arithmetic is the same in both placements.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .prompts import init_prompt_
from .row_optim import RowAlgorithm, RowSparseOptimizer

__all__ = ["ClassPromptBank"]


class ClassPromptBank(nn.Module):
    """Per-class prompt tables, stored as persistent buffers (saved with the model's state_dict)."""

    def __init__(self, num_classes: int, counts: list[int], dim: int, patch_size: int, *, offload: bool = False) -> None:
        super().__init__()
        self.num_classes, self.counts, self.dim, self.offload = num_classes, list(counts), dim, offload
        self._optimizer: RowSparseOptimizer | None = None
        self._active_rows: list[torch.Tensor] = []
        for i, n in enumerate(self.counts):
            if n > 0:
                table = init_prompt_(torch.empty(num_classes, n, dim), patch_size, dim)
                self.register_buffer(f"table_{i}", self._place(table))

    def _place(self, table: torch.Tensor) -> torch.Tensor:
        return table.pin_memory() if self.offload and torch.cuda.is_available() else table

    def _apply(self, fn: Callable, recurse: bool = True):
        """Offloaded tables stay on the host (and in float32) when the model moves or casts."""
        if not self.offload:
            return super()._apply(fn, recurse)
        kept = {name: self._buffers.pop(name) for name in self.table_names()}
        try:
            return super()._apply(fn, recurse)
        finally:
            self._buffers.update(kept)

    def table_names(self) -> list[str]:
        return [f"table_{i}" for i, n in enumerate(self.counts) if n > 0]

    def tables(self) -> list[torch.Tensor]:
        return [getattr(self, name) for name in self.table_names()]

    @property
    def storage_device(self) -> torch.device:
        """Where the tables (and their optimiser state) live: the host when offloaded."""
        tables = self.tables()
        return tables[0].device if tables else torch.device("cpu")

    def numel_per_class(self) -> int:
        return sum(self.counts) * self.dim

    def gather(self, classes: torch.Tensor, device: torch.device) -> list[torch.Tensor | None]:
        """Rows of ``classes`` per layer, as leaf tensors on ``device`` that will receive gradients.

        Returns one entry per layer (None where the layer has no class prompts). When training, the
        rows are registered with the bank's optimiser for its next step.
        """
        index = classes.to(self.storage_device)
        rows: list[torch.Tensor] = []
        out: list[torch.Tensor | None] = []
        for i, n in enumerate(self.counts):
            if n == 0:
                out.append(None)
                continue
            row = getattr(self, f"table_{i}").index_select(0, index).to(device, non_blocking=True)
            row.requires_grad_(self.training)
            rows.append(row)
            out.append(row)
        self._active_rows = rows
        if self.training and self._optimizer is not None:
            self._optimizer.set_active(index, rows)
        return out

    @property
    def active_rows(self) -> list[torch.Tensor]:
        """The rows handed out by the last :meth:`gather` (their ``.grad`` after backward)."""
        return self._active_rows

    def optimizer(self, algorithm: RowAlgorithm, lr: float, **kwargs) -> RowSparseOptimizer:
        """Create (or replace) the row-sparse optimiser of this bank; build it after moving the model."""
        self._optimizer = RowSparseOptimizer(self.tables(), algorithm, lr, **kwargs)
        return self._optimizer
