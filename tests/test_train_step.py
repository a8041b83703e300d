"""Trainer.step against the step written out by hand, and what building a Trainer leaves alone.

The reference below uses the model's forward and the Proxy-Anchor loss, then writes the rest out:
zero_grad, backward, clipping by the joint norm, and torch's own optimisers for the dense parameters
and for the class-prompt rows the batch gathered. Nothing of semproxy.train or semproxy.optim is used.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional

import pytest
import torch
from torch import nn

from conftest import NUM_CLASSES, micro_config
from semproxy import host_memory
from semproxy.config import Config, OptimConfig
from semproxy.data import BatchClasses
from semproxy.data.loader import TrainBatch
from semproxy.losses import ProxyAnchorLoss, ProxyAnchorOutput
from semproxy.models import PromptedViT, build_model
from semproxy.train import Trainer

CPU = torch.device("cpu")
OPTIM = {"adamw": {"optimizer": "adamw", "lr": 0.01, "lr_proxy": 0.1, "weight_decay": 0.05},
         "sgd": {"optimizer": "sgd", "lr": 0.05, "lr_proxy": 0.5, "momentum": 0.9, "weight_decay": 1e-3}}


def step_config(method: str, **optim) -> Config:
    """The micro ViT of conftest (adapter dropout on: the step must run the model in training mode)."""
    model = dataclasses.asdict(micro_config(method=method, adapter_dropout=0.1, gru_dropout=0.2))
    return Config().replace({**model, "warmup_epochs": 0, **optim})


def fixed_batch(batch: tuple[torch.Tensor, torch.Tensor]) -> TrainBatch:
    """conftest's batch (8 images of 4 classes) with its class grouping, as the loader yields it."""
    images, labels = batch
    return TrainBatch(images, labels, BatchClasses.from_labels(labels))


def _torch_optimizer(cfg: OptimConfig, groups: list[dict]) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _clip_(grads: list[torch.Tensor], max_norm: Optional[float]) -> None:
    """Scale every gradient by max_norm / (their joint norm), when that is below 1."""
    if max_norm is None:
        return
    norm = torch.sqrt(sum((g.float() ** 2).sum() for g in grads))
    scale = min(1.0, max_norm / (float(norm) + 1e-6))
    for g in grads:
        g.mul_(scale)


class ReferenceStep:
    """The training step written out, its optimisers kept from one step to the next.

    The class-prompt rows of the batch's classes (every layer's, side by side) are a torch parameter of
    their own, updated by torch's optimiser and written back into the per-layer tables (the batches
    here always hold the same classes).
    """

    def __init__(self, model: PromptedViT, config: Config) -> None:
        self.model, self.config, optim = model, config, config.optim
        encoder = [p for p in model.parameters() if p.requires_grad and p is not model.proxy_bias]
        self.dense = _torch_optimizer(optim, [{"params": encoder, "lr": optim.lr},
                                              {"params": [model.proxy_bias], "lr": optim.lr_proxy}])
        self.leaf: Optional[nn.Parameter] = None
        self.rows_optimizer: Optional[torch.optim.Optimizer] = None

    def __call__(self, batch: TrainBatch) -> ProxyAnchorOutput:
        images, labels, groups = batch
        out = self.model.forward_train(images, labels, groups)
        loss = self.config.loss
        terms = ProxyAnchorLoss(loss.pa_alpha, loss.pa_delta, loss.pa_pos_norm)(out.embeddings, labels, out.proxies)
        self.dense.zero_grad()
        terms.loss.backward()
        rows = [out.class_rows] if out.class_rows is not None else []
        dense = [p for p in self.model.parameters() if p.requires_grad]
        _clip_([t.grad for t in dense + rows if t.grad is not None], self.config.optim.grad_clip)
        self.dense.step()
        if rows:
            self._step_rows(rows[0], groups.classes)
        return terms

    def _step_rows(self, rows: torch.Tensor, classes: torch.Tensor) -> None:
        if self.rows_optimizer is None:
            self.leaf = nn.Parameter(rows.detach().clone())
            self.rows_optimizer = _torch_optimizer(self.config.optim, [{"params": [self.leaf]}])
        self.leaf.data.copy_(rows.detach())
        self.leaf.grad = rows.grad
        self.rows_optimizer.step()
        bank = self.model.semantic.bank
        with torch.no_grad():
            for table, layer in zip(bank.tables(), [r for r in bank.layers(self.leaf) if r is not None]):
                table[classes] = layer


class Stepped(NamedTuple):
    """A Trainer and a reference model after the same steps from the same ``start`` state."""

    trainer: Trainer
    reference: PromptedViT
    start: dict[str, torch.Tensor]
    terms: ProxyAnchorOutput
    expected: ProxyAnchorOutput


def step_both(config: Config, batch: TrainBatch, steps: int = 2) -> Stepped:
    """``steps`` steps on ``batch`` (two: the second sees the first's optimiser state and gradients)."""
    torch.manual_seed(0)
    trainer = Trainer(config, None, CPU, num_classes=NUM_CLASSES)
    start = {name: value.clone() for name, value in trainer.model.state_dict().items()}
    reference = build_model(config.model, NUM_CLASSES).train()
    reference.load_state_dict(start)
    reference_step = ReferenceStep(reference, config)
    for step in range(steps):
        torch.manual_seed(step)  # the same dropout masks in both
        terms = trainer.step(batch)
        torch.manual_seed(step)
        expected = reference_step(batch)
    return Stepped(trainer, reference, start, terms, expected)


def trained_names(model: PromptedViT) -> list[str]:
    """State names of what a step trains: parameters that require grad and the class-prompt tables."""
    return [n for n, p in model.named_parameters() if p.requires_grad] + [
        n for n in model.state_dict() if ".bank.table_" in n]


# The class prompts' row-sparse Adam rounds apart from torch's AdamW (its bias correction is taken in
# float64), by an ulp after one step, which the second step carries into everything (measured: 1 ulp of the
# loss, 2.4e-7 at most in a parameter); the rest is exact.
@pytest.mark.parametrize("method,optimizer,tolerance", [("vptsp_gru", "adamw", 1e-6), ("adapter", "sgd", 0.0),
                                                        ("vptsp_gru", "sgd", 0.0)])
def test_two_steps_equal_the_step_written_out(batch, method, optimizer, tolerance):
    run = step_both(step_config(method, **OPTIM[optimizer]), fixed_batch(batch))
    for name in ("loss", "pos_loss", "neg_loss"):
        ours, theirs = getattr(run.terms, name), getattr(run.expected, name)
        assert not ours.requires_grad
        torch.testing.assert_close(ours, theirs.detach(), rtol=tolerance, atol=tolerance, msg=name)
    after = run.trainer.model.state_dict()
    for name, value in run.reference.state_dict().items():
        torch.testing.assert_close(after[name], value, rtol=tolerance, atol=tolerance, msg=name)
    moved = {n for n in trained_names(run.trainer.model) if not torch.equal(after[n], run.start[n])}
    tables = {f"semantic.bank.table_{i}" for i in range(3)} if method == "vptsp_gru" else set()
    assert {"proxy_bias", "head.proj.weight", *tables} <= moved and len(moved) > 3 + len(tables)


def test_clipping_bounds_the_whole_step_class_prompt_rows_included(batch):
    config = step_config("vptsp_gru", optimizer="sgd", lr=1.0, lr_proxy=1.0, momentum=0.0, weight_decay=0.0,
                         grad_clip=1e-3)
    run = step_both(config, fixed_batch(batch), steps=1)
    after = run.trainer.model.state_dict()
    for name, value in run.reference.state_dict().items():  # the clip factors may round apart by an ulp
        torch.testing.assert_close(after[name], value, rtol=0, atol=1e-8, msg=name)
    names = trained_names(run.trainer.model)
    tables = [n for n in names if ".bank.table_" in n]
    update = torch.sqrt(sum(((after[n] - run.start[n]) ** 2).sum() for n in names))
    assert update == pytest.approx(1e-3, rel=1e-3)  # lr 1 x clip: the rows' gradients count in the one norm
    assert tables and all(not torch.equal(after[n], run.start[n]) for n in tables)


def test_building_a_trainer_neither_reseeds_nor_touches_process_memory(monkeypatch):
    calls = []
    monkeypatch.setattr(host_memory, "_applied", None)
    monkeypatch.setattr(host_memory, "_set_thresholds", lambda: calls.append("mallopt") or True)
    config = step_config("vptsp_gru", seed=7)
    draws, proxies = [], []
    for seed in (123, 456, 123):
        torch.manual_seed(seed)
        proxies.append(Trainer(config, None, CPU, num_classes=NUM_CLASSES).model.proxy_bias.detach())
        assert torch.initial_seed() == seed  # not config.optim.seed
        draws.append(torch.rand(4))
    assert not torch.equal(draws[0], draws[1]) and torch.equal(draws[0], draws[2])
    assert not torch.equal(proxies[0], proxies[1]) and torch.equal(proxies[0], proxies[2])  # the caller's RNG
    assert calls == []


def test_a_trainer_without_data_steps_but_runs_no_epochs():
    trainer = Trainer(step_config("linear"), None, CPU, num_classes=NUM_CLASSES)
    for method in (trainer.train_epoch, trainer.validate, trainer.test):
        with pytest.raises(RuntimeError, match="built without data"):
            method()
    with pytest.raises(ValueError, match="exactly one of data"):
        Trainer(step_config("linear"), None, CPU)


def test_under_a_grad_scaler_the_class_prompt_rows_step_unscaled_and_skip_on_inf(batch):
    """fp16 training (GPUs without bf16) scales the loss: the gathered class-prompt rows must be
    unscaled like the dense parameters (and clipped and stepped as such), and skipped on an inf."""
    config = step_config("vptsp_gru", optimizer="sgd", momentum=0.0, weight_decay=0.0, grad_clip=0.5)
    plain = step_both(config, fixed_batch(batch), steps=1)
    torch.manual_seed(0)
    scaled = Trainer(config, None, CPU, num_classes=NUM_CLASSES)
    scaled.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)
    torch.manual_seed(0)
    scaled.step(fixed_batch(batch))
    after = scaled.model.state_dict()
    for name, value in plain.trainer.model.state_dict().items():  # a power-of-two scale is exact
        torch.testing.assert_close(after[name], value, rtol=1e-6, atol=1e-7, msg=name)
    tables = {n: v.clone() for n, v in after.items() if ".bank.table_" in n}
    scaled.scaler = torch.amp.GradScaler("cpu", init_scale=float("inf"))  # every gradient overflows
    scaled.step(fixed_batch(batch))
    assert all(torch.equal(scaled.model.state_dict()[n], v) for n, v in tables.items())
