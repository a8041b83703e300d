"""Training-step latency, peak device memory and dispatched operations per method: the paper's Table 10.

One full training step as the trainer runs it (``Trainer.step``: forward, the semantic-proxy pass where
the method has one with the class grouping built on the host, Proxy-Anchor, backward, clipping when
configured, both optimisers; mixed precision on a GPU as the config's ``amp`` says; through
``torch.compile`` with ``--compile``), on ViT-S/16 with random weights at 224 px and batches of K=2
images per class drawn from max(100, B/2) classes (CUB's 100 while a batch fits in them).

Every configuration runs in this one process, one after another, each timed after a warm-up step
(after its compilation with ``--compile``, reported apart): on a GPU the allocator's peak is reset for
each, so its peak memory is its own; on the CPU no per-configuration peak can be read back from a
process's maximum RSS, so that column stays empty. ``--malloc`` is the exception: glibc's thresholds
are set once per process, so its default-malloc / freed-memory-kept comparison runs a process each.

    python bench/bench_step.py [--batches 32 64] [--steps 3] [--device cpu|cuda] [--compile MODE]
    python bench/bench_step.py --pair --steps 8            # vptsp_gru / vpt, steps alternating
    python bench/bench_step.py --ops [--json FILE] [--before FILE] [--cpu-amp]   # aten operations per step
    python bench/bench_step.py --malloc --batches 32 64    # CPU: default malloc vs freed memory kept
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from _tables import RESULTS, machine, publish

from semproxy.models import METHODS  # every registered method, in registration order

BEFORE_AFTER = ("vpt", "vptsp_gru")
VIT_S = "vit_small_patch16_224"
PER_CLASS = 2


def num_classes_for(batch: int) -> int:
    """Training classes of a bench run: CUB's 100, or enough for a batch of B/2 classes x 2."""
    return max(100, batch // PER_CLASS)


def setup(method: str, batch: int, device_name: str, keep_memory: bool = True, backbone: str = VIT_S,
          **overrides):
    """One configuration's trainer and a function timing one ``trainer.step`` of it.

    ``backbone`` with random weights (seed 0), :func:`num_classes_for` classes, batches of 2 images per
    class; ``overrides`` are further config fields. Returns (trainer, step, accumulate_seconds): ``step()``
    gives the seconds and page faults of one step, ``accumulate_seconds`` collects the accumulator's
    share (eager steps only: a compiled step runs it inside its graph).
    """
    import torch

    from semproxy.config import Config
    from semproxy.host_memory import keep_freed_host_memory
    from semproxy.train import Trainer

    device = torch.device(device_name)
    if keep_memory and device.type == "cpu":  # as a training run does (semproxy.train.begin_run)
        keep_freed_host_memory()
    cfg = Config().replace({"backbone": backbone, "pretrained": False, "method": method, "adapter_layers": 7,
                            "adapter_dim": 256, "batch_size": batch, **overrides})
    torch.manual_seed(0)
    classes = num_classes_for(batch)
    trainer = Trainer(cfg, None, device, num_classes=classes, progress=False)
    eager = cfg.optim.compile == "off" and trainer.model.semantic is not None
    accumulate_seconds = _time_accumulator(trainer.model, device) if eager else []
    generator = torch.Generator().manual_seed(0)
    size = trainer.model.backbone.patch_embed.img_size[0]

    def step() -> tuple[float, int]:
        """Seconds and page faults of one training step, as the trainer runs it."""
        train_batch = random_batch(batch, classes, generator, device, size)
        sync(device)
        faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        trainer.step(train_batch)
        sync(device)
        return time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before

    return trainer, step, accumulate_seconds


def random_batch(batch: int, num_classes: int, generator, device, size: int = 224):
    """A TrainBatch of random images, 2 per class, its grouping built on the host as the loader does."""
    import torch

    from semproxy.data import BatchClasses
    from semproxy.data.loader import TrainBatch

    classes = torch.randperm(num_classes, generator=generator)[: batch // PER_CLASS]
    labels = classes.repeat_interleave(PER_CLASS)
    images = torch.randn(batch, 3, size, size, generator=generator)
    return TrainBatch(images.to(device), labels.to(device), BatchClasses.from_labels(labels).to(device))


def _time_accumulator(model, device) -> list[float]:
    """Wrap the model's accumulator so that each call's seconds land in the returned list."""
    seconds, original = [], model.semantic.accumulate

    def timed(*args, **kwargs):
        sync(device)
        start = time.perf_counter()
        out = original(*args, **kwargs)
        sync(device)
        seconds.append(time.perf_counter() - start)
        return out

    model.semantic.accumulate = timed
    return seconds


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def peak_mib(device) -> Optional[float]:
    """The CUDA allocator's peak since its last reset, in MiB; None on the CPU (no per-configuration peak)."""
    import torch

    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def reset_peak(device) -> None:
    import gc

    import torch

    torch._dynamo.reset()  # the previous configuration's compiled step and its CUDA graph pools
    gc.collect()  # the previous configuration's trainer
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def measure(method: str, batch: int, steps: int, device_name: str, keep_memory: bool = True,
            **overrides) -> dict:
    """Median step time (s), accumulator time, page faults per step, compile seconds and CUDA peak memory."""
    import torch

    reset_peak(torch.device(device_name))
    trainer, step, accumulate_seconds = setup(method, batch, device_name, keep_memory, **overrides)
    runs = [step() for _ in range(steps + 1)][1:]  # the first step warms up (and compiles)
    return {"method": method, "batch": batch, "step_s": median([t for t, _ in runs]),
            "accumulate_s": median(accumulate_seconds[1:]) if accumulate_seconds else 0.0,
            "compile_s": trainer.compile_seconds or 0.0, "peak_mib": peak_mib(trainer.device),
            "faults": median([f for _, f in runs])}


def measure_ops(method: str, batch: int, device_name: str, cpu_amp: bool = False, **overrides) -> dict:
    """Aten operations (and kernels: operations that are not views) of one eager step, after a warm-up step.

    ``cpu_amp``: the whole step under the CPU's bf16 autocast, a stand-in for CUDA's mixed precision
    (which a Trainer applies to its forward on a GPU only, its frozen weights lowered to bf16 first) to
    count autocast's casts on a CPU machine.
    """
    import contextlib

    import torch

    from semproxy.train.ops import count_ops

    from semproxy.models.precision import lower_frozen_weights

    reset_peak(torch.device(device_name))
    trainer, step, _ = setup(method, batch, device_name, **overrides)
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if cpu_amp else contextlib.nullcontext()
    if cpu_amp:  # as a Trainer with amp does on a GPU
        lower_frozen_weights(trainer.model, torch.bfloat16)
    with amp:
        step()
    generator = torch.Generator().manual_seed(1)
    size = trainer.model.backbone.patch_embed.img_size[0]
    train_batch = random_batch(batch, num_classes_for(batch), generator, trainer.device, size)
    with amp:
        count = count_ops(trainer.step, train_batch)[1]
    return {"method": method, "ops": count.total, "kernels": count.kernels, "peak_mib": peak_mib(trainer.device),
            "casts": count.kernels_by_name["_to_copy"], "top": count.kernels_by_name.most_common(6)}


def measure_pair(batch: int, steps: int, device_name: str, **overrides) -> dict:
    """vptsp_gru / vpt with their steps alternating in one process: the ratio least exposed to drift."""
    vpt_step = setup("vpt", batch, device_name, **overrides)[1]
    sp_step = setup("vptsp_gru", batch, device_name, **overrides)[1]
    vpt_step(), sp_step()  # warm-up (and compilation)
    pairs = [(vpt_step()[0], sp_step()[0]) for _ in range(steps)]
    return {"batch": batch, "vpt_s": median([a for a, _ in pairs]), "vptsp_gru_s": median([b for _, b in pairs]),
            "ratio": median([b / a for a, b in pairs]), "ratios": [b / a for a, b in pairs]}


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _mib(value: Optional[float]) -> str:
    return "" if value is None else f"{value:,.0f}"


def publish_steps(args) -> None:
    """The latency table: every method at every batch size, in this process."""
    overrides = {"compile": args.compile, "backbone": args.backbone}
    results = {(m, b): measure(m, b, args.steps, args.device, **overrides) for b in args.batches for m in args.methods}
    amp = ", mixed precision as in training" if args.device.startswith("cuda") else ""
    lines = [f"Training step of {args.backbone} (random weights, K=2, max(100, B/2) classes), compile: "
             f"{args.compile}, median of {args.steps} steps after a warm-up, one process, on {args.device} "
             f"({machine(args.device)}{amp}). Peak MiB: CUDA's allocator, per configuration (empty on the CPU).", "",
             "| method | " + " | ".join(f"B={b} step ms | B={b} / vpt | B={b} peak MiB" for b in args.batches)
             + " | compile s | accumulator share of the step |",
             "|---|" + "---:|---:|---:|" * len(args.batches) + "---:|---:|"]
    for method in args.methods:
        cells = []
        for batch in args.batches:
            r, vpt = results[(method, batch)], results.get(("vpt", batch))
            cells += [f"{1000 * r['step_s']:,.1f}", f"{r['step_s'] / vpt['step_s']:.2f}" if vpt else "-",
                      _mib(r["peak_mib"])]
        shares = [results[(method, b)]["accumulate_s"] / results[(method, b)]["step_s"] for b in args.batches]
        compiled = ", ".join(f"{results[(method, b)]['compile_s']:.0f}" for b in args.batches)
        share = ", ".join(f"{100 * s:.2f}%" for s in shares) if any(shares) else "-"
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {compiled if args.compile != 'off' else '-'} | {share} |")
    publish(lines, args.out)


def publish_ops(args) -> None:
    """Operations per step for every method at one batch size, beside a recorded earlier run (``--before``)."""
    batch = args.batches[0]
    rows = [measure_ops(m, batch, args.device, args.cpu_amp, backbone=args.backbone) for m in args.methods]
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    before = {r["method"]: r for r in json.loads(Path(args.before).read_text())} if args.before else {}
    amp = ", the step under the CPU's bf16 autocast" if args.cpu_amp else ""
    lines = [f"Aten operations one training step dispatches (eager, the second step), {args.backbone} "
             f"(random weights), B={batch} (K=2), SGD{amp}, on {args.device} ({machine(args.device)}). Kernels: "
             "operations that are not views (views launch nothing); casts: autocast's _to_copy kernels. Peak MiB: "
             "CUDA's allocator (empty on the CPU).", "",
             "| method | ops before | kernels before | casts before | ops after | kernels after | casts after "
             "| kernels after / before | peak MiB | most frequent kernels after |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        old = before.get(row["method"], {})
        ratio = f"{row['kernels'] / old['kernels']:.2f}" if old else "-"
        top = ", ".join(f"{name} {n}" for name, n in row["top"])
        lines.append(f"| {row['method']} | {old.get('ops', '-')} | {old.get('kernels', '-')} | {old.get('casts', '-')} "
                     f"| {row['ops']} | {row['kernels']} | {row['casts']} | {ratio} | {_mib(row['peak_mib'])} | {top} |")
    publish(lines, args.out)


def publish_pairs(args) -> None:
    overrides = {"compile": args.compile, "backbone": args.backbone}
    lines = [f"vptsp_gru / vpt, {args.backbone} (random weights, K=2), compile: {args.compile}, steps alternating "
             f"in one process, median of {args.steps} pairs after a warm-up pair, on {args.device} "
             f"({machine(args.device)}).", "",
             "| B | vpt step ms | vptsp_gru step ms | vptsp_gru / vpt (median of pair ratios) | pair ratios |",
             "|---:|---:|---:|---:|---|"]
    for batch in args.batches:
        r = measure_pair(batch, args.steps, args.device, **overrides)
        lines.append(f"| {batch} | {1000 * r['vpt_s']:,.1f} | {1000 * r['vptsp_gru_s']:,.1f} | {r['ratio']:.2f} | "
                     f"{', '.join(f'{x:.2f}' for x in r['ratios'])} |")
    publish(lines, args.out)


def run_one(method: str, batch: int, args, keep_memory: bool) -> dict:
    """One configuration in a process of its own (``--malloc``: glibc's thresholds are per process)."""
    command = [sys.executable, __file__, "--one", method, str(batch), "--steps", str(args.steps), "--device",
               args.device, "--backbone", args.backbone]
    run = subprocess.run(command + ([] if keep_memory else ["--default-malloc"]), capture_output=True, text=True,
                         check=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


def publish_malloc(args) -> None:
    """Default malloc vs freed host memory kept (``semproxy/host_memory.py``), for vpt and vptsp_gru."""
    lines = [f"Before/after keeping freed host memory, {args.backbone}, median of {args.steps} steps, a process "
             f"per cell, on cpu ({machine('cpu')}).", "",
             "| method | B | before: step s | before: page faults per step | after: step s "
             "| after: page faults per step | after / before |", "|---|---:|---:|---:|---:|---:|---:|"]
    for batch in args.batches:
        for method in BEFORE_AFTER:
            old, new = run_one(method, batch, args, False), run_one(method, batch, args, True)
            lines.append(f"| {method} | {batch} | {old['step_s']:.2f} | {old['faults']:,} | {new['step_s']:.2f} "
                         f"| {new['faults']:,} | {new['step_s'] / old['step_s']:.2f} |")
    publish(lines, Path(args.out).with_name("step_malloc.md"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", default="off", choices=["off", "default", "cuda_graphs"],
                        help="the config's compile mode for the timed steps (default: off)")
    parser.add_argument("--backbone", default=VIT_S, help=f"timm ViT, random weights (default: {VIT_S})")
    parser.add_argument("--pair", action="store_true", help="only vptsp_gru / vpt, their steps alternating")
    parser.add_argument("--ops", action="store_true", help="aten operations per step, at the first of --batches")
    parser.add_argument("--json", help="with --ops: also write the counts to this file")
    parser.add_argument("--before", help="with --ops: a --json file of an earlier run, tabulated beside")
    parser.add_argument("--cpu-amp", action="store_true",
                        help="with --ops on the CPU: count under bf16 autocast (CUDA's mixed precision's casts)")
    parser.add_argument("--malloc", action="store_true", help="CPU: default malloc vs freed memory kept")
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "BATCH"), help=argparse.SUPPRESS)
    parser.add_argument("--default-malloc", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help="the table's file (default: bench/results/step.md, step_pair.md, step_ops.md)")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]), args.steps, args.device, not args.default_malloc,
                                 backbone=args.backbone)))
        return
    mode = "pair" if args.pair else "ops" if args.ops else "malloc" if args.malloc else "step"
    args.out = args.out or str(RESULTS / {"pair": "step_pair.md", "ops": "step_ops.md"}.get(mode, "step.md"))
    {"pair": publish_pairs, "ops": publish_ops, "malloc": publish_malloc, "step": publish_steps}[mode](args)


if __name__ == "__main__":
    main()
