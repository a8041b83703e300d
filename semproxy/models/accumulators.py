"""Accumulators that fold each batch's semantic proxies into a per-class state (method.md section 2).

An accumulator maps the stored states of the batch's G classes, shape (G, E), and their K in-batch
semantic proxies in sampler order, shape (G, K, E) with a (G, K) validity mask for classes that
have fewer than K samples, to the new unit-norm states (G, E). The result stays differentiable with
respect to the proxies and the accumulator's own parameters; the caller detaches what it stores.
"""
from __future__ import annotations

from typing import Callable, Literal, Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Accumulator", "EMAAccumulator", "GRUAccumulator", "ACCUMULATORS", "create_accumulator"]


class Accumulator(nn.Module):
    """Base class: ``forward(state, proxies, mask) -> new unit-norm state``."""

    def forward(self, state: torch.Tensor, proxies: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError


class EMAAccumulator(Accumulator):
    """P <- normalise(beta * P + (1 - beta) * mean_k s_k)   (eq. 3)."""

    def __init__(self, keep: float) -> None:
        super().__init__()
        self.keep = keep

    def forward(self, state: torch.Tensor, proxies: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        if mask is None:
            mean = proxies.mean(dim=1)
        else:
            weights = mask.to(proxies.dtype).unsqueeze(-1)
            mean = (proxies * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)
        return F.normalize(self.keep * state + (1.0 - self.keep) * mean, dim=-1)


class GRUAccumulator(Accumulator):
    """A GRU cell with one bias per gate, stepped over the class's samples (eqs. 4-7).

    z = sigmoid(x W_z + h U_z + b_z), r = sigmoid(x W_r + h U_r + b_r),
    n = act(x W_n + r * (h U_n) + b_n), h <- (1 - z) * n + z * h. ``act`` is ReLU in the paper
    (to keep the update's scale) or tanh for a plain GRU.
    """

    def __init__(self, dim: int, activation: Literal["relu", "tanh"] = "relu", dropout: float = 0.0) -> None:
        super().__init__()
        self.dim = dim
        self.input_proj = nn.Linear(dim, 3 * dim)              # W_z|W_r|W_n and b_z|b_r|b_n
        self.hidden_proj = nn.Linear(dim, 3 * dim, bias=False)  # U_z|U_r|U_n
        self.act = {"relu": torch.relu, "tanh": torch.tanh}[activation]
        self.dropout = nn.Dropout(dropout)
        bound = dim ** -0.5  # torch.nn.GRU's init (a deviation from the paper code's: docs/method.md)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    def _step(self, projected: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """One GRU step from the input's projection x W + b (all three gates) and the hidden state."""
        xz, xr, xn = projected.chunk(3, dim=-1)
        hz, hr, hn = self.hidden_proj(h).chunk(3, dim=-1)
        z = torch.sigmoid(xz + hz)
        r = torch.sigmoid(xr + hr)
        n = self.act(xn + r * hn)
        return (1 - z) * n + z * h

    def forward(self, state: torch.Tensor, proxies: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        # The input projections do not depend on h: one matmul for every gate of every step.
        projected = self.input_proj(proxies)  # (G, K, 3E)
        h = state
        for k in range(proxies.shape[1]):
            step = self.dropout(self._step(projected[:, k], h))
            h = step if mask is None else torch.where(mask[:, k, None], step, h)
        return F.normalize(h, dim=-1)


ACCUMULATORS: dict[str, Callable[..., Accumulator]] = {
    "ema": lambda dim, cfg: EMAAccumulator(cfg.ema_keep),
    "gru": lambda dim, cfg: GRUAccumulator(dim, cfg.gru_activation, cfg.gru_dropout),
}


def create_accumulator(name: str, dim: int, cfg) -> Accumulator:
    """Build the accumulator registered under ``name`` from a ModelConfig."""
    try:
        factory = ACCUMULATORS[name]
    except KeyError:
        raise ValueError(f"unknown accumulator '{name}' (expected one of {', '.join(ACCUMULATORS)})") from None
    return factory(dim, cfg)
