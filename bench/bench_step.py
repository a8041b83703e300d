"""Training-step latency and peak memory per method: the analogue of the paper's Table 10.

Each (method, batch) runs in its own process (so peak memory is that configuration's own): ViT-S/16
with random weights at 224 px, 100 classes, 2 samples per class, one full training step as the
trainer runs it: ``Trainer.step`` (forward, semantic-proxy pass where the method has one with the
class grouping built on the host, Proxy-Anchor, backward, clipping when configured, optimiser
steps; mixed precision on a GPU as the config's ``amp`` says). Prints a table with each method's time
relative to vpt and the share of the step spent in the GRU/EMA accumulator, then a before/after
table for vpt and vptsp_gru with glibc's default malloc (before ``keep_freed_host_memory``), and
writes bench/results/step.md.

    python bench/bench_step.py [--batches 32 64] [--steps 3] [--device cpu|cuda]
    python bench/bench_step.py --pair --steps 6    # vptsp_gru / vpt alternating in one process
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from _tables import RESULTS, publish

from semproxy.models import METHODS  # every registered method, in registration order

BEFORE_AFTER = ("vpt", "vptsp_gru")
AMP_NOTE = ", mixed precision as in training"


def setup(method: str, batch: int, device_name: str, keep_memory: bool = True, **overrides):
    """One configuration's trainer and a function timing one ``trainer.step`` of it.

    ViT-S/16 with random weights (seed 0), 100 classes, batches of 2 images per class; ``overrides``
    are further config fields. Returns (trainer, step, accumulate_seconds): ``step()`` gives the
    seconds and page faults of one step, ``accumulate_seconds`` collects the accumulator's share.
    """
    import torch

    from semproxy.config import Config
    from semproxy.host_memory import keep_freed_host_memory
    from semproxy.train import Trainer

    device = torch.device(device_name)
    if keep_memory and device.type == "cpu":  # as a training run does (semproxy.train.begin_run)
        keep_freed_host_memory()
    cfg = Config().replace({"backbone": "vit_small_patch16_224", "pretrained": False, "method": method,
                            "adapter_layers": 7, "adapter_dim": 256, "batch_size": batch, **overrides})
    torch.manual_seed(0)
    trainer = Trainer(cfg, None, device, num_classes=100)
    accumulate_seconds = _time_accumulator(trainer.model, device) if trainer.model.semantic is not None else []
    generator = torch.Generator().manual_seed(0)

    def step() -> tuple[float, int]:
        """Seconds and page faults of one training step, as the trainer runs it."""
        train_batch = random_batch(batch, 100, generator, device)
        sync(device)
        faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        trainer.step(train_batch)
        sync(device)
        return time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before

    return trainer, step, accumulate_seconds


def random_batch(batch: int, num_classes: int, generator, device):
    """A TrainBatch of random 224 px images, 2 per class, its grouping built on the host as the loader does."""
    import torch

    from semproxy.data import BatchClasses
    from semproxy.data.loader import TrainBatch

    classes = torch.randperm(num_classes, generator=generator)[: batch // 2]
    labels = classes.repeat_interleave(2)
    images = torch.randn(batch, 3, 224, 224, generator=generator)
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


def measure(method: str, batch: int, steps: int, device_name: str, keep_memory: bool = True) -> dict:
    """Median step time (s), accumulator time, page faults per step and peak memory of one configuration."""
    import torch

    trainer, step, accumulate_seconds = setup(method, batch, device_name, keep_memory)
    device = trainer.device
    runs = [step() for _ in range(steps + 1)][1:]  # the first step warms up
    peak = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"method": method, "batch": batch, "step_s": median([t for t, _ in runs]),
            "accumulate_s": median(accumulate_seconds[1:]) if accumulate_seconds else 0.0,
            "peak_mb": peak, "faults": median([f for _, f in runs])}


def measure_pair(batch: int, steps: int, device_name: str) -> dict:
    """vptsp_gru / vpt with their steps alternating in one process: the ratio least exposed to drift."""
    vpt_step = setup("vpt", batch, device_name)[1]
    sp_step = setup("vptsp_gru", batch, device_name)[1]
    vpt_step(), sp_step()  # warm-up
    pairs = [(vpt_step()[0], sp_step()[0]) for _ in range(steps)]
    return {"batch": batch, "vpt_s": median([a for a, _ in pairs]), "vptsp_gru_s": median([b for _, b in pairs]),
            "ratio": median([b / a for a, b in pairs]), "ratios": [b / a for a, b in pairs]}


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_one(method: str, batch: int, args, keep_memory: bool = True) -> dict:
    command = [sys.executable, __file__, "--one", method, str(batch), "--steps", str(args.steps), "--device", args.device]
    run = subprocess.run(command + ([] if keep_memory else ["--default-malloc"]), capture_output=True, text=True,
                         check=True)
    result = json.loads(run.stdout.strip().splitlines()[-1])
    print(f"  {method} B={batch}{'' if keep_memory else ' (default malloc)'}: {result['step_s']:.2f} s", file=sys.stderr)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "BATCH"), help=argparse.SUPPRESS)
    parser.add_argument("--one-pair", type=int, metavar="BATCH", help=argparse.SUPPRESS)
    parser.add_argument("--default-malloc", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--pair", action="store_true",
                        help="only vptsp_gru / vpt, their steps alternating in one process per batch size")
    parser.add_argument("--out", default=str(RESULTS / "step.md"))
    args = parser.parse_args()
    if args.one_pair:
        print(json.dumps(measure_pair(args.one_pair, args.steps, args.device)))
        return
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]), args.steps, args.device, not args.default_malloc)))
        return
    if args.pair:
        return publish_pairs(args)
    results, before = {}, {}
    for batch in args.batches:
        for method in args.methods:
            results[(method, batch)] = run_one(method, batch, args)
        if args.device == "cpu":
            for method in BEFORE_AFTER:
                before[(method, batch)] = run_one(method, batch, args, keep_memory=False)
    import torch

    machine = (torch.cuda.get_device_name() if args.device.startswith("cuda")
               else f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores")
    lines = [f"Training step of ViT-S/16 (random weights, 224 px, 100 classes, K=2), median of {args.steps} steps "
             f"after a warm-up, on {args.device} ({machine}{AMP_NOTE if args.device.startswith('cuda') else ''}), "
             f"torch {torch.__version__}.", "",
             "| method | " + " | ".join(f"B={b} step s | B={b} / vpt | B={b} peak MB" for b in args.batches)
             + " | accumulator share of the step |",
             "|---|" + "---:|---:|---:|" * len(args.batches) + "---:|"]
    for method in args.methods:
        cells = []
        for batch in args.batches:
            r, vpt = results[(method, batch)], results.get(("vpt", batch))
            ratio = f"{r['step_s'] / vpt['step_s']:.2f}" if vpt else "-"
            cells += [f"{r['step_s']:.2f}", ratio, f"{r['peak_mb']:,.0f}"]
        shares = [results[(method, b)]["accumulate_s"] / results[(method, b)]["step_s"] for b in args.batches]
        share = ", ".join(f"{100 * s:.2f}%" for s in shares) if any(shares) else "-"
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {share} |")
    if before:
        lines += ["", "Before/after keeping freed host memory (glibc malloc thresholds, `semproxy/host_memory.py`):", "",
                  "| method | B | before: step s | before: page faults per step | after: step s "
                  "| after: page faults per step | after / before |", "|---|---:|---:|---:|---:|---:|---:|"]
        for (method, batch), old in before.items():
            new = results.get((method, batch)) or run_one(method, batch, args)
            lines.append(f"| {method} | {batch} | {old['step_s']:.2f} | {old['faults']:,} | {new['step_s']:.2f} "
                         f"| {new['faults']:,} | {new['step_s'] / old['step_s']:.2f} |")
        for batch in args.batches:
            pairs = [before.get((m, batch)) for m in BEFORE_AFTER] + [results.get((m, batch)) for m in BEFORE_AFTER]
            if all(pairs):
                lines.append(f"| vptsp_gru / vpt | {batch} | {pairs[1]['step_s'] / pairs[0]['step_s']:.2f} | | "
                             f"{pairs[3]['step_s'] / pairs[2]['step_s']:.2f} | | |")
    publish(lines, args.out)


def publish_pairs(args) -> None:
    import torch

    lines = [f"vptsp_gru / vpt, ViT-S/16 (random weights, 224 px, 100 classes, K=2), steps alternating in one "
             f"process, median of {args.steps} pairs after a warm-up pair, on {args.device}, torch {torch.__version__}.",
             "", "| B | vpt step s | vptsp_gru step s | vptsp_gru / vpt (median of pair ratios) | pair ratios |",
             "|---:|---:|---:|---:|---|"]
    for batch in args.batches:
        run = subprocess.run([sys.executable, __file__, "--one-pair", str(batch), "--steps", str(args.steps),
                              "--device", args.device], capture_output=True, text=True, check=True)
        r = json.loads(run.stdout.strip().splitlines()[-1])
        lines.append(f"| {batch} | {r['vpt_s']:.2f} | {r['vptsp_gru_s']:.2f} | {r['ratio']:.2f} | "
                     f"{', '.join(f'{x:.2f}' for x in r['ratios'])} |")
    publish(lines, str(Path(args.out).with_name("step_pair.md")))


if __name__ == "__main__":
    main()
