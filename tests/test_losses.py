"""Proxy-Anchor against pytorch-metric-learning and against its formula with |P| as divisor."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning.losses import ProxyAnchorLoss as PMLProxyAnchor

from semproxy.losses import ProxyAnchorLoss


def _data(seed, batch=24, classes=10, dim=16):
    g = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(batch, dim, generator=g)
    labels = torch.randint(0, classes // 2, (batch,), generator=g)  # half the proxies have no positive
    proxies = torch.randn(classes, dim, generator=g)
    return embeddings, labels, proxies


@pytest.mark.parametrize("alpha,delta", [(32.0, 0.1), (16.0, 0.2)])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_pytorch_metric_learning(alpha, delta, seed):
    embeddings, labels, proxies = _data(seed)
    reference = PMLProxyAnchor(num_classes=proxies.shape[0], embedding_size=proxies.shape[1], margin=delta, alpha=alpha)
    with torch.no_grad():
        reference.proxies.copy_(proxies)
    expected = reference(embeddings, labels)
    ours = ProxyAnchorLoss(alpha, delta, "positive")(embeddings, labels, proxies)
    torch.testing.assert_close(ours.loss, expected, rtol=1e-5, atol=1e-5)


def _formula(embeddings, labels, proxies, alpha, delta, pos_divisor):
    cos = F.normalize(embeddings.double(), dim=1) @ F.normalize(proxies.double(), dim=1).T
    pos, neg = 0.0, 0.0
    for p in range(proxies.shape[0]):
        positives = labels == p
        if positives.any():
            pos += torch.log(1 + torch.exp(-alpha * (cos[positives, p] - delta)).sum())
        neg += torch.log(1 + torch.exp(alpha * (cos[~positives, p] + delta)).sum())
    return pos / pos_divisor, neg / proxies.shape[0]


@pytest.mark.parametrize("pos_norm", ["positive", "all"])
def test_terms_match_the_formula(pos_norm):
    embeddings, labels, proxies = _data(3)
    divisor = len(torch.unique(labels)) if pos_norm == "positive" else proxies.shape[0]
    pos, neg = _formula(embeddings, labels, proxies, 32.0, 0.1, divisor)
    out = ProxyAnchorLoss(32.0, 0.1, pos_norm)(embeddings, labels, proxies)
    torch.testing.assert_close(out.pos_loss.double(), pos, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.neg_loss.double(), neg, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.loss, out.pos_loss + out.neg_loss)


def test_all_variant_shrinks_the_pull_term_by_positive_fraction():
    embeddings, labels, proxies = _data(4)
    standard = ProxyAnchorLoss(pos_norm="positive")(embeddings, labels, proxies)
    paper = ProxyAnchorLoss(pos_norm="all")(embeddings, labels, proxies)
    fraction = len(torch.unique(labels)) / proxies.shape[0]
    torch.testing.assert_close(paper.pos_loss, standard.pos_loss * fraction)


def test_stable_for_large_alpha_and_half_precision_inputs():
    embeddings, labels, proxies = _data(5)
    out = ProxyAnchorLoss(alpha=500.0)(embeddings.half(), labels, proxies.bfloat16())
    assert torch.isfinite(out.loss) and out.loss.dtype == torch.float32


def test_unknown_pos_norm_is_refused():
    with pytest.raises(ValueError, match="pa_pos_norm"):
        ProxyAnchorLoss(pos_norm="mean")
