"""The ``compile`` knob: the training step is one graph, compiles once, and trains as the eager step does.

Dynamo's ``explain`` (tracing only, no compilation: 1-4 s a method) shows every method's step is one
graph without breaks: no host sync and no branch on tensor values anywhere in forward, loss,
backward and both optimisers (a ``.item()`` or an ``if`` on a tensor would break it). Compiling
with Inductor costs 25-50 s a step function on 2 CPU cores, so two methods compile, on a 2-block
micro ViT: vpt with SGD and vptsp_gru with AdamW (the capturable path, the GRU, the row-sparse update).
"""
from __future__ import annotations

import dataclasses
import typing

import pytest
import torch
from timm.models import register_model

from conftest import NUM_CLASSES, micro_config
from semproxy.config import Config, ConfigError, OptimConfig
from semproxy.data import BatchClasses
from semproxy.data.loader import TrainBatch
from semproxy.models import METHODS
from semproxy.models.backbone import vit_micro_patch8_32
from semproxy.train import Trainer
from semproxy.train.compiled import COMPILE_MODES, explain_step

CPU = torch.device("cpu")


@register_model
def vit_micro2_patch8_32(pretrained: bool = False, **kwargs):
    """The micro ViT with 2 blocks: a fifth of the graph to compile."""
    return vit_micro_patch8_32(pretrained, **{"depth": 2, **kwargs})


def make_trainer(method: str, compile: str = "default", backbone: str = "vit_micro_patch8_32", **values) -> Trainer:
    """conftest's micro model (``backbone`` with 2 blocks: depths 2) at batches of 4 classes x 2."""
    depths = {"prompt_depth": 2, "class_prompt_depth": 2, "adapter_layers": 2, "lora_layers": 2} \
        if backbone == "vit_micro2_patch8_32" else {}
    model = dataclasses.asdict(micro_config(method=method, backbone=backbone, **depths))
    config = Config().replace({**model, "batch_size": 8, "compile": compile, **values})
    torch.manual_seed(0)
    return Trainer(config, None, CPU, num_classes=NUM_CLASSES)


def make_batch(seed: int) -> TrainBatch:
    """8 images of 4 of the 6 classes, 2 each, adjacent (the class-balanced sampler's batch)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randperm(NUM_CLASSES, generator=generator)[:4].repeat_interleave(2)
    return TrainBatch(torch.randn(8, 3, 32, 32, generator=generator), labels, BatchClasses.from_labels(labels))


def test_the_modes_are_the_configs_names():
    assert set(COMPILE_MODES) == set(typing.get_args(typing.get_type_hints(OptimConfig)["compile"]))
    assert COMPILE_MODES["off"].torch_mode is None and COMPILE_MODES["cuda_graphs"].torch_mode == "reduce-overhead"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_graphs_on_the_cpu_and_compile_with_offload_are_one_line_config_errors():
    with pytest.raises(ConfigError, match="'cuda_graphs', which captures CUDA graphs, but the device is cpu") as error:
        make_trainer("vpt", "cuda_graphs")
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="offload_class_prompts keeps the class prompts on the host"):
        Config().replace({"compile": "default", "offload_class_prompts": True})


@pytest.mark.parametrize("method,optimizer", [(m, "adamw") for m in METHODS] + [("vptsp_gru", "sgd")])
def test_every_methods_step_is_one_graph_without_breaks(method, optimizer):
    trainer = make_trainer(method, optimizer=optimizer, grad_clip=1.0)
    images, labels, groups = make_batch(0)
    explained = explain_step(trainer.device_step, images, labels, groups)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


def test_the_step_under_amp_is_one_graph_that_asks_the_driver_nothing(monkeypatch):
    """A GPU's amp step, traced under the CPU's bf16 autocast: the dtype is the Trainer's, decided when it
    was built (the driver query ``is_bf16_supported`` cannot be traced: a hard error under fullgraph)."""
    import semproxy.evaluation

    monkeypatch.setattr(semproxy.evaluation, "amp_dtype", lambda device, enabled: torch.bfloat16)
    trainer = make_trainer("vptsp_gru", optimizer="adamw")
    assert trainer.amp_dtype == torch.bfloat16

    def asked(*args, **kwargs):
        raise AssertionError("the step asked for the amp dtype")

    monkeypatch.setattr(semproxy.evaluation, "amp_dtype", asked)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", asked)
    images, labels, groups = make_batch(0)
    explained = explain_step(trainer.device_step, images, labels, groups)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


def test_a_compiled_step_takes_only_batches_of_the_runs_shape():
    trainer = make_trainer("vptsp_gru")  # the check comes before the step: nothing compiles here
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])
    with pytest.raises(ValueError, match=r"batches of 4 classes x 2 samples, got 3 classes of up to 3 \(uneven\)"):
        trainer.step(TrainBatch(torch.randn(8, 3, 32, 32), labels, BatchClasses.from_labels(labels)))
    assert trainer.compile_seconds is None


class ListLoader:
    """Stands in for the training loader: the given batches, every epoch."""

    def __init__(self, batches: list[TrainBatch]) -> None:
        self.batches = batches

    def set_epoch(self, epoch: int) -> None:
        pass

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)


def run_epoch(trainer: Trainer, batches: list[TrainBatch]):
    trainer.__dict__["loader"] = ListLoader(batches)  # the cached property, filled without data
    trainer.progress = False
    return trainer.train_epoch()


# Inductor fuses and reorders float32 arithmetic, so the compiled step rounds apart from the eager one.
# Measured after 2 steps: loss 2e-7 relative; parameters 1.2e-7 with SGD, 4e-6 with AdamW, whose update
# g / sqrt(v) turns an ulp of a tiny gradient into a visible share of a step (lr 0.01: 4e-4 of one).
@pytest.mark.parametrize("method,optimizer,atol", [("vpt", "sgd", 1e-6), ("vptsp_gru", "adamw", 2e-5)])
def test_the_compiled_step_trains_as_the_eager_step_and_reports_its_compile_time(method, optimizer, atol):
    batches = [make_batch(1), make_batch(2)]  # other classes, other images: the same graph
    values = {"backbone": "vit_micro2_patch8_32", "optimizer": optimizer, "lr": 0.01}
    eager, compiled = make_trainer(method, "off", **values), make_trainer(method, "default", **values)
    expected = run_epoch(eager, batches)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    result = run_epoch(compiled, batches)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs + 1  # the second batch reuses it
    assert result.compile_seconds == compiled.compile_seconds > 0 and expected.compile_seconds == 0
    assert result.seconds < result.compile_seconds  # reported apart, not inside the epoch's training time
    assert result.loss == pytest.approx(expected.loss, rel=1e-5)
    after = compiled.model.state_dict()
    for name, value in eager.model.state_dict().items():
        torch.testing.assert_close(after[name], value, rtol=0, atol=atol, msg=name)
    moved = [n for n in compiled.model.semantic.bank.table_names()] if method == "vptsp_gru" else []
    assert all(not torch.equal(after[f"semantic.bank.{n}"], make_trainer(method, "off", **values).model
                               .state_dict()[f"semantic.bank.{n}"]) for n in moved)


def test_a_torch_whose_dynamo_lacks_a_needed_setting_is_a_one_line_config_error(monkeypatch):
    monkeypatch.delattr(torch._dynamo.config, "trace_autograd_ops", raising=False)
    if hasattr(torch._dynamo.config, "trace_autograd_ops"):
        pytest.skip("this torch's config cannot lose the setting")
    with pytest.raises(ConfigError, match="has no 'trace_autograd_ops' setting") as error:
        make_trainer("vpt", "default")
    assert "\n" not in str(error.value)
