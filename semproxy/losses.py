"""Proxy-Anchor loss (Kim et al. 2020), method.md section 3.

L = 1/|P+| sum_{p in P+} log(1 + sum_{x in X_p+} exp(-alpha (s(x,p) - delta)))
  + 1/|P|  sum_{p in P}  log(1 + sum_{x in X_p-} exp( alpha (s(x,p) + delta)))

with s the cosine similarity and P+ the proxies with a positive in the batch. ``pos_norm="all"``
divides the first term by |P| instead, as the paper code did. Each log(1 + sum exp) is computed as
a logsumexp with a zero logit, so it is stable for any alpha, and in float32 under autocast. No host
sync and no branch on values: a compiled training step traces it whole.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ProxyAnchorLoss", "ProxyAnchorOutput"]


@dataclass
class ProxyAnchorOutput:
    loss: torch.Tensor
    pos_loss: torch.Tensor   # the pull term, already divided
    neg_loss: torch.Tensor   # the push term, already divided


def _log1p_sum_exp(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per column: log(1 + sum over masked rows of exp(logits))."""
    masked = logits.masked_fill(~mask, float("-inf"))
    zero = logits.new_zeros(1, logits.shape[1])
    return torch.logsumexp(torch.cat([zero, masked], dim=0), dim=0)


class ProxyAnchorLoss(nn.Module):
    """Proxy-Anchor over (B, E) embeddings, (B,) labels in [0, C) and (C, E) proxies."""

    def __init__(self, alpha: float = 32.0, delta: float = 0.1,
                 pos_norm: Literal["positive", "all"] = "positive") -> None:
        super().__init__()
        if pos_norm not in ("positive", "all"):
            raise ValueError(f"pa_pos_norm must be 'positive' or 'all', got '{pos_norm}'")
        self.alpha, self.delta, self.pos_norm = alpha, delta, pos_norm

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, proxies: torch.Tensor) -> ProxyAnchorOutput:
        cos = F.normalize(embeddings.float(), dim=-1) @ F.normalize(proxies.float(), dim=-1).T  # (B, C)
        # A comparison, not F.one_hot: that checks the labels' range on the CPU with a host read per call.
        positive = labels.unsqueeze(1) == torch.arange(proxies.shape[0], device=labels.device)
        pos_terms = _log1p_sum_exp(-self.alpha * (cos - self.delta), positive)
        neg_terms = _log1p_sum_exp(self.alpha * (cos + self.delta), ~positive)
        with_positive = positive.any(dim=0)
        divisor = with_positive.sum() if self.pos_norm == "positive" else proxies.shape[0]
        pos_loss = torch.where(with_positive, pos_terms, 0.0).sum() / divisor  # no boolean index: no host sync
        neg_loss = neg_terms.sum() / proxies.shape[0]
        return ProxyAnchorOutput(pos_loss + neg_loss, pos_loss, neg_loss)
