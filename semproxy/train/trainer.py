"""Training: ``fit(config)`` runs epochs, validates, checkpoints and calls back after each epoch.

``fit`` knows nothing of Ray: the Tune trainable is one of its callbacks. A checkpoint of epoch k
resumed with ``resume_from`` continues exactly as if the run had never stopped (bit-identical on
CPU): batches and augmentation depend only on (seed, epoch), and the RNG, optimiser, schedule and
accumulator states are all saved.

``Trainer.step`` is the one training step (forward, Proxy-Anchor, backward, clipping, both
optimisers): the epochs run it, and so do the benches, ``semproxy.tools.pretrain_micro`` and the
tests, on a Trainer built without data. Its device work (``Trainer.device_step``) has no host sync
and no branch on tensor values; with ``compile`` set it runs as one compiled graph
(``semproxy.train.compiled``), compiled at the run's first step, whose seconds the first epoch
reports.

Who owns what: ``fit`` is the entry point of a run and sets what the run needs process-wide through
``begin_run`` (torch's global seed, freed host memory kept on a CPU); a Trainer changes nothing
outside itself.

``python -m semproxy.train --config FILE`` is the final training of a config (``semproxy/cli/train.py``).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Optional, Sequence

import torch
from tqdm.auto import tqdm

from ..checkpoint import (backbone_hash, check_compatible, load_checkpoint, restore_trained, save_checkpoint,
                          trained_state)
from ..config import Config, ConfigError
from ..data.batch_classes import BatchClasses
from ..data.loader import TrainBatch, TrainLoader
from ..device import resolve_device
from ..errors import TrainingError
from ..evaluation import autocast_to, evaluate, prepare_amp
from ..host_memory import keep_freed_host_memory
from ..losses import ProxyAnchorLoss, ProxyAnchorOutput
from ..metric_names import split_metrics
from ..models import PromptedViT, build_model
from ..optim import Optimizers, build_optimizers
from ..prepared import PreparedData, prepare_data
from .compiled import compile_step

__all__ = ["fit", "begin_run", "Trainer", "EpochResult", "FitResult", "NonFiniteLossError"]


class NonFiniteLossError(TrainingError):
    """The loss became NaN or infinite; the message names the epoch and step."""


@dataclass
class EpochResult:
    """What one epoch produced; ``metrics`` holds ``val_*`` names when the epoch was validated."""

    epoch: int                  # epochs completed so far (1-based)
    loss: float
    pos_loss: float
    neg_loss: float
    lr: float
    seconds: float                      # training time of the epoch
    images: int = 0                     # training images seen in the epoch
    data_wait: float = 0.0              # seconds of ``seconds`` the step loop waited for a batch
    val_seconds: float = 0.0            # validation time after the epoch (0 when not validated)
    compile_seconds: float = 0.0        # compiling the step (its first call), not in ``seconds``
    metrics: dict[str, float] = field(default_factory=dict)

    def flat(self) -> dict[str, float]:
        values = {k: v for k, v in asdict(self).items() if k != "metrics"}
        return {**values, **self.metrics}


@dataclass
class FitResult:
    history: list[EpochResult]
    test_metrics: dict[str, float]
    model: PromptedViT
    data_path: str = ""  # how the training batches were made, and why (semproxy.data.loader.DataPath)


Callback = Callable[[EpochResult, "Trainer"], None]


class Trainer:
    """Model, optimisers and loss of one run and the step that trains them; with data, its epochs too.

    Built with ``data`` (what :func:`fit` does), a Trainer owns the run's training loader and runs
    epochs, validation, test and checkpoints. Built without (``num_classes`` instead) it only
    steps (:meth:`step`) on batches its caller makes: the benches, ``pretrain_micro`` and the tests.

    Constructing one changes nothing outside it. The model's initial values are drawn from torch's
    global RNG as the caller left it, and process-wide settings (freed host memory kept) are not
    touched: both belong to the entry point of a run (:func:`begin_run`, which :func:`fit` calls);
    a bench or test that builds a Trainer itself seeds as it needs.
    """

    def __init__(self, config: Config, data: Optional[PreparedData], device: torch.device, *,
                 num_classes: Optional[int] = None, progress: bool = True) -> None:
        if (data is None) == (num_classes is None):
            raise ValueError("Trainer: give exactly one of data (a training run) and num_classes "
                             "(steps on given batches)")
        self.config, self.data, self.device, self.progress = config, data, device, progress
        self.model = build_model(config.model, self.loader.num_classes if data is not None else num_classes)
        self.backbone_sha256 = backbone_hash(self.model)
        self.model.to(device).train()
        self.compile = config.optim.compile
        self.optimizers: Optimizers = build_optimizers(self.model, config.optim, compiled=self.compile != "off")
        self.loss_fn = ProxyAnchorLoss(config.loss.pa_alpha, config.loss.pa_delta, config.loss.pa_pos_norm)
        # Asked once here (the driver query cannot be traced into a compiled step), after the backbone
        # hash: that one is of the weights as loaded.
        self.amp_dtype = prepare_amp(self.model, device, config.optim.amp)
        self.amp = self.amp_dtype is not None
        fp16 = self.amp_dtype == torch.float16
        self.scaler = torch.amp.GradScaler("cuda") if fp16 else None
        if fp16 and self.compile != "off":
            raise ConfigError(f"key 'compile' is '{self.compile}' but this GPU lacks bf16, and fp16's loss scaling "
                              f"reads the gradients' finiteness on the host: use compile: off or amp: false")
        self._run_step = compile_step(self.device_step, self.compile, device, self.optimizers.state_tensors)
        self.compile_seconds: Optional[float] = None  # measured at the first compiled step
        self._unreported_compile = 0.0
        self.epoch = 0
        self.history: list[EpochResult] = []

    # -- one step --------------------------------------------------------------------------
    def step(self, batch: TrainBatch) -> ProxyAnchorOutput:
        """One optimisation step on ``batch`` (images, labels, their host-built class grouping).

        The host checks the labels (and, compiled, that the batch has the run's shape), then
        :meth:`device_step` runs, compiled when ``compile`` says so (the first call compiles: its
        seconds are ``compile_seconds``). The model must be in training mode (a Trainer starts in
        it, and evaluation puts it back). Returns the loss terms, detached, on the device where the
        step computed them: reading them is the caller's host sync, the step has none of its own
        (GradScaler's skip check under fp16 aside).
        """
        images, labels, groups = batch
        groups.check_labels(self.model.num_classes)
        if self.compile != "off":
            per_class = self.config.data.samples_per_class
            groups.check_shape(self.config.data.batch_size // per_class, per_class)
        start = time.perf_counter()
        terms = self._run_step(images, labels, groups)
        if self.compile != "off" and self.compile_seconds is None:
            self.compile_seconds = self._unreported_compile = time.perf_counter() - start
        if self.scaler is not None:
            self.scaler.update()
        return terms

    def device_step(self, images: torch.Tensor, labels: torch.Tensor, groups: BatchClasses) -> ProxyAnchorOutput:
        """The step's device work, what ``compile`` traces: forward (under autocast on a GPU with
        ``amp``), Proxy-Anchor, then :meth:`Optimizers.minimise` (gradients, clipping, both updates)."""
        with autocast_to(self.device, self.amp_dtype):
            out = self.model.train_outputs(images, groups)
        terms = self.loss_fn(out.embeddings, labels, out.proxies)
        self.optimizers.minimise(terms.loss, out.class_rows, out.row_classes, self.scaler)
        return ProxyAnchorOutput(terms.loss.detach(), terms.pos_loss.detach(), terms.neg_loss.detach())

    # -- one epoch -------------------------------------------------------------------------
    def train_epoch(self) -> EpochResult:
        """One pass over the training loader, a :meth:`step` per batch, then the schedule's epoch step."""
        self.model.train()
        self.loader.set_epoch(self.epoch)
        start = time.perf_counter()
        losses = torch.zeros(len(self.loader), 3, device=self.device)  # no host sync per step
        batches = tqdm(self.loader, desc=f"epoch {self.epoch + 1}/{self.config.optim.epochs}", leave=False,
                       disable=not self.progress)
        waits, images_seen = [], 0
        for index, batch in enumerate(_timed(batches, waits)):
            images_seen += batch.images.shape[0]
            terms = self.step(batch)
            losses[index] = torch.stack([terms.loss, terms.pos_loss, terms.neg_loss])
        self._check_finite(losses)
        lr = self.optimizers.lr
        self.optimizers.end_epoch()
        self.epoch += 1
        mean = losses.mean(0).tolist()
        compiling, self._unreported_compile = self._unreported_compile, 0.0
        return EpochResult(self.epoch, mean[0], mean[1], mean[2], lr, time.perf_counter() - start - compiling,
                           images=images_seen, data_wait=sum(waits), compile_seconds=compiling)

    @cached_property
    def loader(self) -> TrainLoader:
        """The training loader of the run's data."""
        return self._data().train_loader(self.config, self.device)

    def _data(self) -> PreparedData:
        if self.data is None:
            raise RuntimeError("this Trainer was built without data: it steps on given batches, it cannot run "
                               "epochs, validate or test")
        return self.data

    def _check_finite(self, losses: torch.Tensor) -> None:
        finite = torch.isfinite(losses).all(1)
        if not bool(finite.all()):
            step = int((~finite).nonzero()[0]) + 1
            raise NonFiniteLossError(f"non-finite loss at epoch {self.epoch + 1}, step {step} "
                                     f"(loss {losses[step - 1, 0].item()}); try a lower lr or lr_proxy")

    def validate(self) -> dict[str, float]:
        """``val_*`` retrieval metrics; none when the run's data holds no validation split."""
        return self._evaluate("val") if self._data().val is not None else {}

    def test(self) -> dict[str, float]:
        """``test_*`` retrieval metrics."""
        return self._evaluate("test")

    def _evaluate(self, split: Literal["val", "test"]) -> dict[str, float]:
        metrics = evaluate(self.model, self._data(), split, self.config.eval.eval_batch_size, self.device,
                           amp=self.amp, progress=self.progress)
        return split_metrics(split, metrics)

    # -- checkpoints -----------------------------------------------------------------------
    def payload(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "epoch": self.epoch,
            "trained": {k: v.cpu() for k, v in trained_state(self.model).items()},
            "optimizers": self.optimizers.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": rng,
            "config": self.config.to_mapping(),
            "backbone": {"name": self.config.model.backbone, "sha256": self.backbone_sha256},
            "history": [asdict(h) for h in self.history],
            "data": self.data.fingerprint if self.data is not None else None,
        }

    def save(self, directory: str | Path) -> Path:
        return save_checkpoint(directory, self.payload())

    def restore(self, payload: dict[str, Any], where: str = "checkpoint") -> None:
        check_compatible(payload, self.config, self.backbone_sha256, where=where)
        restore_trained(self.model, payload, where=where)
        self.optimizers.load_state_dict(payload["optimizers"])
        if self.scaler is not None and payload.get("scaler"):
            self.scaler.load_state_dict(payload["scaler"])
        torch.set_rng_state(payload["rng"]["torch"])
        if "cuda" in payload["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(payload["rng"]["cuda"], self.device)
        self.epoch = int(payload["epoch"])
        self.history = [EpochResult(**h) for h in payload["history"]]


def _timed(batches: Iterable, waits: list[float]) -> Iterator:
    """Yield from ``batches``, appending to ``waits`` how long each batch took to arrive.

    On a GPU the host runs ahead of the device, so this is an upper bound on the device's wait.
    """
    iterator = iter(batches)
    while True:
        start = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            return
        waits.append(time.perf_counter() - start)
        yield batch


def begin_run(config: Config, device: torch.device) -> None:
    """Set what a training run owns process-wide, before its model is built; :func:`fit` calls it.

    Seeds torch's global RNG with ``config.optim.seed``: the model's initial values and every draw
    of the run (dropout) follow from it, and a resumed run then restores its saved RNG state. On a
    CPU, also keeps freed host memory for reuse (``semproxy.host_memory``): activations are reused
    step after step instead of re-faulted. Benches and tests that build a Trainer themselves
    choose their own seed and memory behaviour instead.
    """
    if device.type == "cpu":
        keep_freed_host_memory()
    torch.manual_seed(config.optim.seed)


def fit(config: Config, *, data: Optional[PreparedData] = None, callbacks: Sequence[Callback] = (),
        resume_from: Optional[str | Path | dict] = None, device: Optional[torch.device | str] = None,
        progress: bool = True) -> FitResult:
    """Train ``config`` for ``config.optim.epochs`` epochs; validate every ``eval_every`` and after the last.

    The entry point of a training run, for the final-training command and the search's trials
    alike: it sets what the run owns process-wide before building its :class:`Trainer` (see
    :func:`begin_run`), so the same config trains the same way whatever the process did before.

    Args:
        data: prepared caches (built here when None; test caches only when ``test_eval``).
        callbacks: called with each epoch's result and the trainer (to report, checkpoint, log).
        resume_from: a checkpoint file, directory or loaded payload to continue from.
        device: overrides ``config.eval.device``.
    """
    config.check()
    device = torch.device(device) if device is not None else resolve_device(config.eval.device)
    if data is None:
        data = prepare_data(config, with_test=config.eval.test_eval, progress=progress)
    begin_run(config, device)
    trainer = Trainer(config, data, device, progress=progress)
    if resume_from is not None:
        payload = resume_from if isinstance(resume_from, dict) else load_checkpoint(resume_from)
        trainer.restore(payload, where=str(resume_from) if not isinstance(resume_from, dict) else "checkpoint")
    epochs = range(trainer.epoch, config.optim.epochs)
    for _ in tqdm(epochs, desc="training", disable=not progress, leave=False):
        result = trainer.train_epoch()
        last = trainer.epoch == config.optim.epochs
        if last or trainer.epoch % config.eval.eval_every == 0:
            start = time.perf_counter()
            result.metrics = trainer.validate()
            result.val_seconds = time.perf_counter() - start
        trainer.history.append(result)
        for callback in callbacks:
            callback(result, trainer)
    test_metrics = trainer.test() if config.eval.test_eval and data.test is not None else {}
    return FitResult(trainer.history, test_metrics, trainer.model, str(trainer.loader.path))

