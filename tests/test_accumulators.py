"""EMA and GRU accumulators against a float64 recomputation of method.md's equations."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import NUM_CLASSES, micro_config
from semproxy.models import BatchClasses, EMAAccumulator, GRUAccumulator, build_model


def _unit(*shape, seed):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def _gru_reference(acc: GRUAccumulator, h, xs, activation):
    """Eqs. 4-7 in float64, written out gate by gate from the module's weights."""
    d = acc.dim
    w, b = acc.input_proj.weight.double(), acc.input_proj.bias.double()
    u = acc.hidden_proj.weight.double()
    w_z, w_r, w_n = w[:d].T, w[d:2 * d].T, w[2 * d:].T
    u_z, u_r, u_n = u[:d].T, u[d:2 * d].T, u[2 * d:].T
    b_z, b_r, b_n = b[:d], b[d:2 * d], b[2 * d:]
    act = torch.relu if activation == "relu" else torch.tanh
    h = h.double()
    for x in xs:
        x = x.double()
        z = torch.sigmoid(x @ w_z + h @ u_z + b_z)
        r = torch.sigmoid(x @ w_r + h @ u_r + b_r)
        n = act(x @ w_n + r * (h @ u_n) + b_n)
        h = (1 - z) * n + z * h
    return h / h.norm(dim=-1, keepdim=True)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_gru_matches_float64_equations(activation):
    torch.manual_seed(0)
    acc = GRUAccumulator(16, activation)
    state, proxies = _unit(5, 16, seed=1), _unit(5, 3, 16, seed=2)
    got = acc(state, proxies, None)
    expected = _gru_reference(acc, state, [proxies[:, k] for k in range(3)], activation)
    torch.testing.assert_close(got.double(), expected, rtol=0, atol=1e-6)


def test_gru_uses_one_bias_per_gate_not_grucells_two():
    acc = GRUAccumulator(8)
    assert acc.hidden_proj.bias is None and acc.input_proj.bias.shape == (24,)


def test_gru_with_uneven_classes_steps_each_class_over_its_own_samples():
    torch.manual_seed(0)
    acc = GRUAccumulator(8)
    values = _unit(6, 8, seed=3)
    groups = BatchClasses.from_labels(torch.tensor([11, 5, 11, 20, 11, 5]))  # sizes 2, 3, 1, interleaved
    inverse, grouped, mask = groups.inverse, groups.arrange(values), groups.mask
    assert inverse.tolist() == [1, 0, 1, 2, 1, 0] and groups.classes.tolist() == [5, 11, 20]
    assert mask is not None and mask.sum(1).tolist() == [2, 3, 1]
    state = _unit(3, 8, seed=4)
    got = acc(state, grouped, mask)
    for g in range(3):
        rows = [values[i] for i in range(6) if inverse[i] == g]  # batch order within the class
        expected = _gru_reference(acc, state[g:g + 1], [r[None] for r in rows], "relu")
        torch.testing.assert_close(got[g:g + 1].double(), expected, rtol=0, atol=1e-6)


def test_ema_matches_equation():
    acc = EMAAccumulator(0.8)
    state, proxies = _unit(4, 8, seed=5), _unit(4, 2, 8, seed=6)
    expected = 0.8 * state.double() + 0.2 * proxies.double().mean(1)
    expected = expected / expected.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(acc(state, proxies, None).double(), expected, rtol=0, atol=1e-6)
    mask = torch.tensor([[True, False]] * 4)
    single = 0.8 * state.double() + 0.2 * proxies[:, 0].double()
    torch.testing.assert_close(acc(state, proxies, mask).double(), single / single.norm(dim=-1, keepdim=True),
                               rtol=0, atol=1e-6)


@pytest.mark.parametrize("method", ["vptsp_ema", "vptsp_gru"])
def test_training_forward_updates_batch_class_states_only(batch, method):
    torch.manual_seed(0)
    model = build_model(micro_config(method=method), NUM_CLASSES).train()
    images, labels = batch
    before = model.semantic.state.clone()
    out = model.forward_train(images, labels)
    present = torch.unique(labels)
    absent = torch.tensor([c for c in range(NUM_CLASSES) if c not in present.tolist()])
    after = model.semantic.state
    assert not after.requires_grad
    assert torch.equal(after[absent], before[absent])
    assert not torch.allclose(after[present], before[present])
    torch.testing.assert_close(after.norm(dim=1), torch.ones(NUM_CLASSES))
    # the proxy of a batch class is the fusion of its bias and its fresh state
    lam = model.cfg.proxy_bias_ratio
    c = int(present[0])
    fused = lam * model.proxy_bias[c] + (1 - lam) * after[c]
    torch.testing.assert_close(out.proxies[c], fused / fused.norm())


@pytest.mark.parametrize("method", ["vptsp_ema", "vptsp_gru"])
def test_accumulator_state_survives_a_state_dict_round_trip(batch, method):
    torch.manual_seed(0)
    model = build_model(micro_config(method=method), NUM_CLASSES).train()
    model.forward_train(*batch)
    torch.manual_seed(99)
    fresh = build_model(micro_config(method=method), NUM_CLASSES)
    assert not torch.equal(fresh.semantic.state, model.semantic.state)
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh.semantic.state, model.semantic.state)
    for a, b in zip(fresh.semantic.bank.tables(), model.semantic.bank.tables()):
        assert torch.equal(a, b)


def test_class_plus_sample_prompts_feed_the_proxy_pass(batch):
    images, labels = batch
    outputs = {}
    for mode in ("class", "class+sample"):
        torch.manual_seed(0)
        model = build_model(micro_config(method="vptsp_gru", proxy_prompts=mode), NUM_CLASSES).train()
        out = model.forward_train(images, labels)
        # a loss on the semantic proxies alone reaches the sample prompts only in class+sample mode
        probe = torch.randn(out.semantic.shape[1], generator=torch.Generator().manual_seed(1))
        (out.semantic @ probe).sum().backward()
        outputs[mode] = (out.semantic.detach(), model.prompts.prompts["0"].grad)
    assert outputs["class"][1] is None or not outputs["class"][1].any()  # in the batch, not in the proxy pass
    assert outputs["class+sample"][1] is not None and outputs["class+sample"][1].abs().sum() > 0
    assert not torch.allclose(outputs["class"][0], outputs["class+sample"][0])


def test_normalise_bias_makes_lambda_a_convex_weight():
    torch.manual_seed(0)
    model = build_model(micro_config(method="vptsp_ema", normalise_bias=True, proxy_bias_ratio=0.3), NUM_CLASSES)
    bias, state = model.proxy_bias.detach(), model.semantic.state
    expected = 0.3 * F.normalize(bias, dim=-1) + 0.7 * state
    torch.testing.assert_close(model.current_proxies().detach(), F.normalize(expected, dim=-1))
    plain = build_model(micro_config(method="vptsp_ema"), NUM_CLASSES)
    assert float(plain.proxy_bias.detach().norm(dim=1).mean()) == pytest.approx(0.16, rel=0.3)  # paper code's tiny start

