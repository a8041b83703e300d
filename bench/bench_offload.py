"""Class prompts at SOP scale: device-resident memory with host offload, and offload's time per step.

Memory: ViT-S/16 with vptsp_gru class prompts of SOP's shape (CLS-N 5 at each of CLS-L 12 layers,
D 384) for 100, 1,000 and 11,318 classes, in device memory and offloaded. For each, the bytes of the
class-prompt tables that ``model.to(device)`` leaves on the device, of everything else the model
keeps there, and of the rows one SOP batch (32 classes) gathers to the device. On a GPU the device is
CUDA and a real training step adds CUDA's own peak counter; without one the move targets PyTorch's
``meta`` device, which records where each tensor goes without allocating it.

Time: at CUB's size (100 classes, batch 64 with 2 per class, 224 px) the median training step with the
bank in device memory and offloaded, and the bank's own work per step (gather + row update).

    python bench/bench_offload.py [--classes 100 1000 11318] [--steps 3]
"""
from __future__ import annotations

import argparse
import time

import torch

from _tables import RESULTS, machine, publish
from bench_step import median, setup, sync
from semproxy.config import Config
from semproxy.data import BatchClasses
from semproxy.data.loader import TrainBatch
from semproxy.train import Trainer

SOP = {"backbone": "vit_small_patch16_224", "pretrained": False, "method": "vptsp_gru", "class_prompts": 5,
       "class_prompt_depth": 12, "class_prompt_step": 0}


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def resident(num_classes: int, offload: bool, device: torch.device, batch_classes: int) -> dict:
    """Bytes on ``device`` after the move: class-prompt tables, the rest, one batch's gathered rows."""
    cfg = Config().replace({**SOP, "offload_class_prompts": offload})
    trainer = Trainer(cfg, None, device, num_classes=num_classes)
    bank = trainer.model.semantic.bank
    tables = {id(t) for t in bank.tables()}
    # By type: tensors on a GPU say cuda:0 where the device asked for is plain cuda (not equal to it).
    on_device = [t for t in [*trainer.model.parameters(), *trainer.model.buffers()] if t.device.type == device.type]
    rows = bank.gather(torch.arange(batch_classes), device)  # every layer's rows of the batch's classes
    out = {"classes": num_classes, "offload": offload,
           "tables": _bytes(t for t in on_device if id(t) in tables),
           "other": _bytes(t for t in on_device if id(t) not in tables),
           "host_tables": _bytes(t for t in bank.tables() if t.device.type == "cpu"),
           "gathered": _bytes([rows]), "cuda_step_peak": None}
    if device.type == "cuda":
        out["cuda_step_peak"] = cuda_step_peak(trainer, batch_classes)
    return out


def cuda_step_peak(trainer: Trainer, batch_classes: int) -> int:
    """CUDA's peak allocation over one SOP-shaped ``trainer.step`` (batch 32, one image per class)."""
    labels = torch.randperm(trainer.model.num_classes)[:batch_classes]
    images = torch.randn(batch_classes, 3, 224, 224, device="cuda")
    batch = TrainBatch(images, labels.cuda(), BatchClasses.from_labels(labels).to("cuda"))
    torch.cuda.reset_peak_memory_stats()
    trainer.step(batch)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated()


def step_times(offload: bool, device: torch.device, steps: int) -> tuple[float, float]:
    """Median training step and median bank work (gather + row update) at CUB's size, in seconds."""
    sop = {k: v for k, v in SOP.items() if k not in ("backbone", "pretrained", "method")}
    trainer, step, _ = setup("vptsp_gru", 64, device.type, offload_class_prompts=offload, **sop)
    step_seconds = [step()[0] for _ in range(steps + 1)][1:]  # the first step warms up
    bank, generator = trainer.model.semantic.bank, torch.Generator().manual_seed(0)
    bank_seconds = []
    for _ in range(20):  # the bank's own work, with gradients in place
        classes = torch.randperm(100, generator=generator)[:32].sort().values
        sync(device)
        start = time.perf_counter()
        index = classes.to(bank.storage_device)
        rows = bank.gather(index, device)
        trainer.optimizers.bank.update(index, [rows], [torch.ones_like(rows)])
        sync(device)
        bank_seconds.append(time.perf_counter() - start)
    return median(step_seconds), median(bank_seconds)


def mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:,.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, nargs="+", default=[100, 1000, 11318])
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    parser.add_argument("--out", default=str(RESULTS / "offload.md"))
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    where = "cuda" if cuda else "meta (no GPU: where each tensor goes, not an allocator counter)"
    lines = [f"Class prompts of SOP's shape (CLS-N 5 x CLS-L 12, D 384, ViT-S/16), on {machine(device)}. "
             f"Device: {where}.", "",
             "| classes | placement | class prompts on device MiB | rest of the model on device MiB "
             "| rows gathered per batch (32 classes) MiB | class prompts on host MiB | CUDA peak over a step MiB |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for classes in args.classes:
        for offload in (False, True):
            r = resident(classes, offload, torch.device("cuda") if cuda else torch.device("meta"), 32)
            lines.append(f"| {classes:,} | {'offloaded' if offload else 'device'} | {mib(r['tables'])} | "
                         f"{mib(r['other'])} | {mib(r['gathered'])} | {mib(r['host_tables'])} | "
                         f"{mib(r['cuda_step_peak'])} |")
            print(lines[-1], flush=True)
    lines += ["", f"Time at CUB's size (100 classes, batch 64, K=2, 224 px) on {device.type}, median of {args.steps} "
              "steps after a warm-up; bank work = gather + row-sparse Adam update of 32 classes (median of 20).", "",
              "| placement | step s | bank work ms | step / in-memory step |", "|---|---:|---:|---:|"]
    times = {offload: step_times(offload, device, args.steps) for offload in (False, True)}
    for offload, (step, bank) in times.items():
        lines.append(f"| {'offloaded' if offload else 'device'} | {step:.2f} | {1000 * bank:.1f} | "
                     f"{step / times[False][0]:.3f} |")
    publish(lines, args.out)


if __name__ == "__main__":
    main()
