"""The class-prompt bank: per-class deep prompts that turn the frozen ViT into a proxy generator.

Layer ``i`` holds a (C, M_i, D) table, M_i = max(CLS-N - i * step, 0). The tables are views of one
(C, S, D) storage, S = sum_i M_i, the layers side by side: a training step gathers the rows of the
batch's classes for every layer at once, as one fresh leaf tensor on the compute device, and the
:class:`~semproxy.models.row_optim.RowSparseOptimizer` returned by :meth:`ClassPromptBank.optimizer`
updates just those rows, again all layers at once. The state dict still names one table per layer
(``table_i``). With ``offload=True`` the storage and its optimiser state stay in host memory
(pinned once the model is on a GPU), so device memory holds only the batch's rows whatever the
number of classes; the update arithmetic is the same in both placements.
"""
from __future__ import annotations

import itertools
from typing import Callable, Optional

import torch
from torch import nn

from .prompts import init_prompt_
from .row_optim import RowAlgorithm, RowSparseOptimizer

__all__ = ["ClassPromptBank"]


class ClassPromptBank(nn.Module):
    """Per-class prompt tables, persistent buffers (saved with the model's state_dict) viewing one storage."""

    def __init__(self, num_classes: int, counts: list[int], dim: int, patch_size: int, *,
                 offload: bool = False) -> None:
        super().__init__()
        self.num_classes, self.counts, self.dim, self.offload = num_classes, list(counts), dim, offload
        self.offsets = [0, *itertools.accumulate(self.counts)]  # layer i: storage[:, offsets[i]:offsets[i + 1]]
        # Each layer drawn on its own, in layer order: the values of separately allocated tables.
        layers = [init_prompt_(torch.empty(num_classes, n, dim), patch_size, dim) for n in self.counts if n > 0]
        storage = torch.cat(layers, dim=1) if layers else torch.empty(num_classes, 0, dim)
        self.storage = storage  # offloaded: pinned when the model moves to a GPU (see _apply)
        self._buffers.update(self._views())
        self._optimizer: Optional[RowSparseOptimizer] = None

    def _views(self) -> dict[str, torch.Tensor]:
        """The per-layer tables, views of :attr:`storage` (what the state dict and checkpoints name)."""
        return {f"table_{i}": self.storage[:, self.offsets[i]:self.offsets[i + 1]]
                for i, n in enumerate(self.counts) if n > 0}

    def _apply(self, fn: Callable, recurse: bool = True):
        """Moves and casts apply to the storage, then the tables view it again; offloaded, it stays on the host
        (and in float32) when the model moves or casts, pinned once the model moves to a GPU (only then: on a
        machine with GPUs a CPU run would otherwise make a CUDA context to pin it)."""
        for name in self.table_names():
            del self._buffers[name]
        try:
            return super()._apply(fn, recurse)
        finally:
            if not self.offload:
                self.storage = fn(self.storage)
            elif not self.storage.is_pinned() and fn(torch.empty(0)).device.type == "cuda":
                self.storage = self.storage.pin_memory()
            self._buffers.update(self._views())

    def table_names(self) -> list[str]:
        return [f"table_{i}" for i, n in enumerate(self.counts) if n > 0]

    def tables(self) -> list[torch.Tensor]:
        return [getattr(self, name) for name in self.table_names()]

    @property
    def storage_device(self) -> torch.device:
        """Where the tables (and their optimiser state) live: the host when offloaded."""
        return self.storage.device

    def numel_per_class(self) -> int:
        return sum(self.counts) * self.dim

    def gather(self, classes: torch.Tensor, device: torch.device) -> Optional[torch.Tensor]:
        """(G, S, D): the rows of ``classes``, every layer side by side, as a fresh leaf tensor on ``device``.

        The leaf requires grad in training mode: its gradient is what the bank's optimiser updates the
        rows with. None when no layer has class prompts. :meth:`layers` splits it per layer.
        """
        if not self.table_names():
            return None
        rows = self.storage.index_select(0, classes.to(self.storage_device)).to(device, non_blocking=True)
        return rows.requires_grad_(self.training)

    def layers(self, rows: Optional[torch.Tensor]) -> list[Optional[torch.Tensor]]:
        """Per layer, the (..., M_i, D) view of (..., S, D) ``rows``; None where a layer has no class prompts.

        One split, not a slice per layer: its backward is one concatenation where slices would each
        scatter into a zero tensor of the whole and add those up.
        """
        parts = iter(rows.split([n for n in self.counts if n > 0], dim=-2)) if rows is not None else None
        return [next(parts) if parts is not None and n > 0 else None for n in self.counts]

    def optimizer(self, algorithm: RowAlgorithm, lr: float, **kwargs) -> RowSparseOptimizer:
        """A row-sparse optimiser of this bank's storage (replacing any earlier one); build it after moving
        the model. :meth:`activate` hands it the rows of a forward for its next ``step()``."""
        self._optimizer = RowSparseOptimizer([self.storage], algorithm, lr, **kwargs)
        return self._optimizer

    def activate(self, classes: torch.Tensor, rows: torch.Tensor) -> None:
        """Register rows a forward gathered (of ``classes``, on the storage's device) with this bank's
        optimiser, when it has one: its ``step()`` after backward then updates them."""
        if self._optimizer is not None:
            self._optimizer.set_active(classes, [rows])
