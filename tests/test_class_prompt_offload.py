"""The class-prompt bank's row-sparse optimiser and host offload (method.md section 2, last paragraph)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from conftest import NUM_CLASSES, micro_config
from semproxy.losses import ProxyAnchorLoss
from semproxy.models import RowSparseOptimizer, build_model

TORCH_OPTIMIZERS = {
    "sgd": lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-3, foreach=False),
    "adam": lambda params: torch.optim.Adam(params, lr=0.01, weight_decay=1e-3, foreach=False),
    "adamw": lambda params: torch.optim.AdamW(params, lr=0.01, weight_decay=0.05, foreach=False),
}
ROW_KWARGS = {"sgd": dict(lr=0.1, momentum=0.9, weight_decay=1e-3), "adam": dict(lr=0.01, weight_decay=1e-3),
              "adamw": dict(lr=0.01, weight_decay=0.05)}


def _present_schedule(steps, classes, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.nonzero(torch.rand(classes, generator=g) < 0.5).flatten() for _ in range(steps)]


@pytest.mark.parametrize("algorithm", ["sgd", "adam", "adamw"])
def test_each_row_follows_its_own_torch_optimizer(algorithm):
    """Lazy semantics: a row moves only when present, with its own step count (Adam bias correction)."""
    torch.manual_seed(0)
    table = torch.randn(6, 2, 4)
    reference = [torch.nn.Parameter(table[c].clone()) for c in range(6)]
    ref_opts = [TORCH_OPTIMIZERS[algorithm]([p]) for p in reference]
    ours = RowSparseOptimizer([table], algorithm, **ROW_KWARGS[algorithm])
    schedule = _present_schedule(20, 6, seed=1)
    for step, present in enumerate(schedule):
        if present.numel() == 0:
            continue
        grads = torch.randn(present.numel(), 2, 4, generator=torch.Generator().manual_seed(step))
        rows = table.index_select(0, present).requires_grad_()
        rows.grad = grads
        ours.set_active(present, [rows])
        ours.step()
        for j, c in enumerate(present.tolist()):
            reference[c].grad = grads[j].clone()
            ref_opts[c].step()
    assert any(len(s) < 6 for s in schedule)  # some classes skipped steps
    for c in range(6):
        torch.testing.assert_close(table[c], reference[c].detach(), rtol=0, atol=1e-6)


def _train(offload: bool, algorithm: str, steps: int = 20) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(micro_config(method="vptsp_gru", offload_class_prompts=offload), NUM_CLASSES).train()
    dense = TORCH_OPTIMIZERS[algorithm](model.encoder_parameters() + model.proxy_parameters())
    bank_opt = model.semantic.bank.optimizer(algorithm, **ROW_KWARGS[algorithm])
    loss_fn = ProxyAnchorLoss()
    g = torch.Generator().manual_seed(7)
    for step in range(steps):
        classes = torch.randperm(NUM_CLASSES, generator=g)[:3]  # 3 of 6 classes per batch
        labels = classes.repeat_interleave(2)
        images = torch.randn(6, 3, 32, 32, generator=g)
        out = model.forward_train(images, labels)
        loss_fn(out.embeddings, labels, out.proxies).loss.backward()
        dense.step()
        bank_opt.step()
        dense.zero_grad()
    return model


@pytest.mark.parametrize("algorithm", ["sgd", "adamw"])
def test_offloaded_and_in_memory_banks_train_identically(algorithm):
    in_memory, offloaded = _train(False, algorithm), _train(True, algorithm)
    assert offloaded.semantic.bank.offload and not in_memory.semantic.bank.offload
    moved = 0
    for (name, a), b in zip(in_memory.state_dict().items(), offloaded.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)
        moved += "table" in name
    assert moved == 3
    torch.manual_seed(0)
    start = build_model(micro_config(method="vptsp_gru"), NUM_CLASSES)  # the same initial values
    assert not torch.allclose(start.semantic.bank.table_0, in_memory.semantic.bank.table_0)


def test_offloaded_tables_stay_on_the_host_when_the_model_moves():
    model = build_model(micro_config(method="vptsp_gru", offload_class_prompts=True), NUM_CLASSES).double()
    assert all(t.dtype == torch.float32 for t in model.semantic.bank.tables())
    assert model.head.proj.weight.dtype == torch.float64
    in_memory = build_model(micro_config(method="vptsp_gru"), NUM_CLASSES).double()
    assert all(t.dtype == torch.float64 for t in in_memory.semantic.bank.tables())


def test_an_offloaded_bank_of_a_cpu_run_is_never_pinned_even_where_cuda_exists(monkeypatch):
    """Pinning makes a CUDA context: on a GPU machine a CPU run (a CPU trial of a search) must not."""
    pinned = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a machine with GPUs
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self, *args: pinned.append(self.shape) or self)
    model = build_model(micro_config(method="vptsp_gru", offload_class_prompts=True), NUM_CLASSES).to("cpu")
    model.semantic.bank.optimizer("adamw", lr=0.01)
    assert pinned == [] and all(t.device.type == "cpu" for t in model.semantic.bank.tables())


def test_row_optimizer_state_dict_resumes_exactly():
    torch.manual_seed(0)
    table_a = torch.randn(4, 3)
    table_b = table_a.clone()
    opt_a = RowSparseOptimizer([table_a], "adam", lr=0.01)
    schedule = _present_schedule(10, 4, seed=2)
    grads = [torch.randn(len(p), 3) for p in schedule]

    def run(opt, table, steps):
        for present, grad in steps:
            if present.numel():
                rows = table.index_select(0, present).requires_grad_()
                rows.grad = grad
                opt.set_active(present, [rows])
                opt.step()

    run(opt_a, table_a, zip(schedule, grads))
    opt_b = RowSparseOptimizer([table_b], "adam", lr=0.01)
    run(opt_b, table_b, zip(schedule[:5], grads[:5]))
    saved = opt_b.state_dict()
    opt_c = RowSparseOptimizer([table_b], "adam", lr=0.01)
    opt_c.load_state_dict(saved)
    run(opt_c, table_b, zip(schedule[5:], grads[5:]))
    assert torch.equal(table_a, table_b)


@pytest.mark.parametrize("algorithm", ["sgd", "adamw"])
def test_loaded_row_optimizer_state_sits_on_each_tables_device(algorithm):
    """Torch's load_state_dict leaves a state named 'step' on the CPU: the per-row step table must
    follow its table (on a GPU, the first step after a resume indexed across devices)."""
    table = torch.randn(4, 2, 3)
    rows = table.index_select(0, torch.tensor([1, 3])).requires_grad_()
    rows.grad = torch.ones_like(rows)
    saved = RowSparseOptimizer([table], algorithm, lr=0.1)
    saved.set_active(torch.tensor([1, 3]), [rows])
    saved.step()
    elsewhere = torch.empty(4, 2, 3, device="meta")  # stands in for a GPU: any device but the CPU
    loaded = RowSparseOptimizer([elsewhere], algorithm, lr=0.1)
    loaded.load_state_dict(saved.state_dict())
    state = loaded.state[elsewhere]
    assert "step" in state and len(state) == (2 if algorithm == "sgd" else 3)
    assert {name: value.device.type for name, value in state.items()} == {name: "meta" for name in state}


def test_learning_rate_schedulers_drive_the_row_optimizer():
    opt = RowSparseOptimizer([torch.zeros(2, 2)], "sgd", lr=1.0)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=4)
    opt.step()
    scheduler.step()
    assert opt.param_groups[0]["lr"] < 1.0


@pytest.mark.gpu
def test_offload_on_gpu_keeps_the_bank_in_pinned_host_memory():
    torch.manual_seed(0)
    model = build_model(micro_config(method="vptsp_gru", offload_class_prompts=True), NUM_CLASSES).cuda().train()
    assert all(t.device.type == "cpu" and t.is_pinned() for t in model.semantic.bank.tables())
    opt = model.semantic.bank.optimizer("adamw", lr=0.01)
    labels = torch.tensor([0, 0, 3, 3], device="cuda")
    out = model.forward_train(torch.randn(4, 3, 32, 32, device="cuda"), labels)
    ProxyAnchorLoss()(out.embeddings, labels, out.proxies).loss.backward()
    before = model.semantic.bank.table_0.clone()
    opt.step()
    after = model.semantic.bank.table_0
    assert not torch.equal(after[[0, 3]], before[[0, 3]]) and torch.equal(after[[1, 2]], before[[1, 2]])


@pytest.mark.gpu
@pytest.mark.parametrize("compile", ["off", "cuda_graphs"])
def test_a_training_step_with_a_host_built_grouping_never_waits_for_the_gpu(compile):
    """Trainer.step, eager and as a replayed CUDA graph, after warm-up steps (compiling and recording)."""
    from semproxy.config import Config
    from semproxy.data import BatchClasses
    from semproxy.data.loader import TrainBatch
    from semproxy.train import Trainer

    torch.manual_seed(0)
    model = dataclasses.asdict(micro_config(method="vptsp_gru"))
    config = Config().replace({**model, "optimizer": "adamw", "batch_size": 6, "compile": compile})
    trainer = Trainer(config, None, torch.device("cuda"), num_classes=NUM_CLASSES)
    labels = torch.tensor([1, 1, 4, 4, 5, 5])  # classes of a 6-class model
    groups = BatchClasses.from_labels(labels).pin_memory().to("cuda", non_blocking=True)
    images = torch.randn(6, 3, 32, 32).pin_memory().to("cuda", non_blocking=True)
    batch = TrainBatch(images, labels.pin_memory().to("cuda", non_blocking=True), groups)
    for _ in range(3):
        trainer.step(batch)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        trainer.step(batch)
    finally:
        torch.cuda.set_sync_debug_mode("default")
