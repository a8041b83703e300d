"""The function trainable of a search: one trial = one ``semproxy.train.fit`` run.

The driver passes the base config (a plain mapping) and the prepared data (caches pickled by folder,
so every trial on a node maps the same files) through ``tune.with_parameters``; Tune passes the
sampled parameters, by config field name. After every epoch the trial reports its validation
metrics with a checkpoint; a restarted or resumed trial continues from ``tune.get_checkpoint()``.
"""
from __future__ import annotations

import logging
import math
import resource
import tempfile
from typing import Any

import ray
import torch
from ray import tune

from ..checkpoint import load_checkpoint
from ..config import Config
from ..metric_names import BEST_OBJECTIVE, OBJECTIVE, SHOWN_FIRST
from ..models import count_parameters
from ..prepared import PreparedData
from ..train import EpochResult, Trainer, fit

__all__ = ["train_dml", "trial_device", "finite_metrics", "running_best", "measured_costs"]


def trial_device() -> torch.device:
    """The GPU Ray assigned to this trial (Ray sets CUDA_VISIBLE_DEVICES), else the CPU.

    A trial that asked for no GPU still sees every GPU in Ray 2.60, so the assignment, not the
    visibility, decides; a logical GPU on a machine without CUDA falls back to the CPU.
    """
    if ray.get_gpu_ids() and torch.cuda.is_available():
        return torch.device("cuda", 0)
    return torch.device("cpu")


def finite_metrics(values: dict[str, float]) -> dict[str, float]:
    """Tune needs finite numbers (a NaN is never cut by ASHA): NaN/inf metrics report as 0.

    The objective and its companions come first, so Tune's progress table shows them.
    """
    ordered = {**{k: values[k] for k in SHOWN_FIRST if k in values}, **values}
    return {k: (float(v) if math.isfinite(v) else 0.0) for k, v in ordered.items()}


def running_best(history: list[EpochResult]) -> dict[str, float]:
    """The trial's best validation MAP@R so far, under :data:`BEST_OBJECTIVE` (none before a validation).

    Tune writes a trial's TensorBoard hparams with its last result: reported every epoch, this
    makes the hparams view show each trial's best, not its last. From the trainer's history, so a
    trial restarted from a checkpoint keeps the best of the epochs before it.
    """
    values = [h.metrics[OBJECTIVE] for h in history if math.isfinite(h.metrics.get(OBJECTIVE, math.nan))]
    return {BEST_OBJECTIVE: max(values)} if values else {}


def measured_costs(result: EpochResult, trainer: Trainer) -> dict[str, float]:
    """What the epoch cost, as the objectives name it (semproxy.search.objectives.COSTS).

    ``trainable_params``: learned in all classes (the paper's accounting); ``step_ms``: the mean
    training step, waits for data excluded; ``peak_mem_mb``: the GPU allocator's peak, or the
    process's peak resident memory on the CPU.
    """
    batch = trainer.config.data.batch_size
    steps = max(1, result.images // batch)
    params = count_parameters(trainer.model, batch // trainer.config.data.samples_per_class).learned
    if trainer.device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(trainer.device) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    return {"trainable_params": float(params), "step_ms": 1000 * (result.seconds - result.data_wait) / steps,
            "peak_mem_mb": float(peak)}


def train_dml(params: dict[str, Any], *, base: dict, data: PreparedData) -> None:
    """Train one sampled configuration, reporting every epoch."""
    # Ray logs every persisted checkpoint at INFO; forwarded to the driver, such lines trail its summary.
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    config = Config.from_mapping(base).replace(params, where="trial config")
    resume = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            resume = load_checkpoint(folder)

    def report(result: EpochResult, trainer: Trainer) -> None:
        with tempfile.TemporaryDirectory() as folder:
            trainer.save(folder)
            metrics = {**finite_metrics({**result.flat(), **running_best(trainer.history),
                                         **measured_costs(result, trainer)}),
                       "node_id": ray.get_runtime_context().get_node_id()}
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    fit(config, data=data, callbacks=[report], resume_from=resume, device=trial_device(), progress=False)
