"""Which classes a training batch holds, and where each sample sits among its class's samples.

The semantic-proxy step needs the batch's distinct classes (to gather their prompts and states) and
a (classes x samples-per-class) arrangement of the batch (for the accumulator). Computed from labels
on a GPU this costs host syncs (``unique`` and the largest group size have data-dependent shapes).
The loader therefore builds it on the host from the labels it already has, and moves the small
index tensors with the batch: the step itself then never waits for the device.

With the class-balanced sampler every batch holds G classes of exactly K samples: ``mask`` is then
None and ``arrange`` a gather and a reshape, whatever the batch. A compiled step relies on that
(:meth:`BatchClasses.check_shape`): the grouping's structure is a property of the run, never of a batch.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Optional

import torch

__all__ = ["BatchClasses"]


@dataclass(frozen=True)
class BatchClasses:
    """The class grouping of a batch of B samples with G distinct classes.

    Attributes:
        classes: (G,) the distinct class indices, sorted.
        inverse: (B,) each sample's group, an index into ``classes``.
        order: (B,) the samples stably sorted by group (batch order kept inside a group).
        group: (B,) the group of ``order[j]``.
        slot: (B,) the position of ``order[j]`` inside its group.
        mask: (G, K) which group slots hold a sample; None when every group has K samples.
        group_size: K, the largest number of samples of one class.
        host_classes: ``classes`` on the host (for tables kept there), whatever device the rest is on.
    """

    classes: torch.Tensor
    inverse: torch.Tensor
    order: torch.Tensor
    group: torch.Tensor
    slot: torch.Tensor
    mask: Optional[torch.Tensor]
    group_size: int
    host_classes: torch.Tensor

    @classmethod
    def from_labels(cls, labels: torch.Tensor) -> "BatchClasses":
        """Group (B,) integer labels; on a GPU tensor this syncs, so prefer host labels."""
        classes, inverse = torch.unique(labels, sorted=True, return_inverse=True)
        counts = torch.bincount(inverse, minlength=classes.numel())
        group_size = int(counts.max()) if labels.numel() else 0
        order = torch.argsort(inverse, stable=True)
        group = inverse[order]
        slot = torch.arange(labels.numel(), device=labels.device) - (torch.cumsum(counts, 0) - counts)[group]
        mask = None
        if labels.numel() != classes.numel() * group_size:
            mask = torch.zeros(classes.numel(), group_size, dtype=torch.bool, device=labels.device)
            mask[group, slot] = True
        return cls(classes, inverse, order, group, slot, mask, group_size, classes.cpu())

    def check_labels(self, num_classes: int) -> None:
        """Raise ValueError when a label lies outside [0, ``num_classes``).

        Reads ``host_classes`` only, so it never waits for a GPU and runs before any kernel: on a
        GPU an out-of-range label would otherwise be a device-side assert that breaks every later
        CUDA call of the process.
        """
        classes = self.host_classes.tolist()  # sorted; a list, so that no tensor operation runs for it
        if classes and (classes[0] < 0 or classes[-1] >= num_classes):
            bad = [c for c in classes if c < 0 or c >= num_classes]
            raise ValueError(f"labels must be class indices in [0, {num_classes}), got {bad[:5]}"
                             + (f" and {len(bad) - 5} more" if len(bad) > 5 else ""))

    @property
    def num_groups(self) -> int:
        return self.classes.numel()

    def check_shape(self, num_groups: int, group_size: int) -> None:
        """Raise ValueError unless the batch is ``num_groups`` classes of exactly ``group_size`` samples each.

        Host-side (shapes and None-ness only): a compiled step is traced for one batch structure.
        """
        if self.mask is not None or (self.num_groups, self.group_size) != (num_groups, group_size):
            raise ValueError(f"a compiled step takes batches of {num_groups} classes x {group_size} samples, got "
                             f"{self.num_groups} classes of up to {self.group_size}"
                             + (" (uneven)" if self.mask is not None else ""))

    def _map(self, fn) -> "BatchClasses":
        return replace(self, **{f.name: fn(getattr(self, f.name)) for f in fields(self)
                                if f.name != "host_classes" and isinstance(getattr(self, f.name), torch.Tensor)})

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "BatchClasses":
        """The same grouping with its tensors on ``device`` (``host_classes`` stays on the host)."""
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "BatchClasses":
        """Page-locked host copies, so that ``to(cuda, non_blocking=True)`` is asynchronous."""
        return self._map(torch.Tensor.pin_memory)

    def classes_on(self, device: torch.device) -> torch.Tensor:
        """``classes`` on ``device``, from the host copy when that is where they are wanted."""
        return self.host_classes if device.type == "cpu" else self.classes.to(device, non_blocking=True)

    def arrange(self, values: torch.Tensor) -> torch.Tensor:
        """(B, ...) per-sample rows -> (G, K, ...) by group, zero where ``mask`` is False.

        Without a mask the samples sorted by group already are G blocks of K: one gather and a view.
        """
        grouped = values.index_select(0, self.order)
        if self.mask is None:
            return grouped.unflatten(0, (self.num_groups, self.group_size))
        padded = values.new_zeros((self.num_groups, self.group_size) + tuple(values.shape[1:]))
        return padded.index_put((self.group, self.slot), grouped)
