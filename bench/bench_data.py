"""Data path: cached, batched augmentation (each of its paths) vs a JPEG-decoding torchvision ImageFolder DataLoader.

All rows produce the same kind of training batch (RandomResizedCrop + flip + normalise, B x 3 x S x S
float on ``--device``) from the same JPEG files, with the same number of CPU workers. semproxy's
rows are its three data paths (``semproxy.data.loader``): ``host-crops`` (crops cut and resized on
the host: the CPU's path), ``host-batch`` (the padded uint8 batch assembled on the host and
resampled on the device: a GPU whose memory budget the cache exceeds) and ``device-cache`` (the
cache held on the device, the batch gathered and resampled there). Every path runs on any device:
on the CPU the "device" work runs on the CPU too.

Reports images per second of wall time and per busy CPU-second of the machine (all cores and
processes, from /proc/stat: what one core delivers). With ``--step-ms`` each batch is followed by a
simulated training step of that length (a GPU spin kernel the host waits for, or a sleep on the CPU),
and the share of time the loop waited for a batch is reported as the trainer's ``data_wait`` is.
Prints a table and writes bench/results/data.md (data_gpu.md with a GPU).

    python bench/bench_data.py [--classes 40 --per-class 30 --source-size 400 --size 224 --workers 2]
    python bench/bench_data.py --device cuda --source-size 500 --workers 4 --batches 50 --step-ms 50
"""
from __future__ import annotations

import argparse
import gc
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

from _runs import busy_cpu_seconds
from _tables import RESULTS, machine, publish
from bench_step import sync

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms as T

from semproxy.data import BatchAugment, ImageList, TrainLoader, build_train_cache, eval_resize_for, load_benchmark
from semproxy.data.loader import DataPath
from semproxy.data.readers import synthetic
from semproxy.host_memory import keep_freed_host_memory

MEAN = STD = (0.5, 0.5, 0.5)
PATHS = {"host-crops": "crops cut and resized on the host (the CPU's path)",
         "host-batch": "padded uint8 batch on the host, resampled on the device",
         "device-cache": "cache held on the device, batch gathered and resampled there"}


def simulated_step(device: torch.device, step_ms: float) -> Optional[Callable[[], None]]:
    """A stand-in for a training step of ``step_ms``: a GPU spin kernel the host then waits for (a
    trainer that reads its loss every step), or a sleep on the CPU (the host idle as during a GPU
    step); None for 0."""
    if step_ms <= 0:
        return None
    if device.type != "cuda":
        return lambda: time.sleep(step_ms / 1000)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    torch.cuda._sleep(10**7)
    end.record()
    end.synchronize()
    cycles = int(10**7 * step_ms / start.elapsed_time(end))

    def step() -> None:
        torch.cuda._sleep(cycles)
        torch.cuda.current_stream().synchronize()

    return step


def time_batches(batches: Iterable, count: int, device: torch.device, step: Optional[Callable[[], None]] = None,
                 warmup: int = 2) -> tuple[float, float, float]:
    """Images per second of wall time, per busy CPU-second of the whole machine (all processes),
    and the share of the time spent waiting for the next batch (moved to ``device``)."""
    iterator = iter(batches)
    for _ in range(warmup):
        next(iterator)
    sync(device)
    start, busy, waited, images = time.perf_counter(), busy_cpu_seconds(), 0.0, 0
    for _ in range(count):
        asked = time.perf_counter()
        batch = next(iterator)[0].to(device, non_blocking=True)
        waited += time.perf_counter() - asked
        images += batch.shape[0]
        if step is not None:
            step()
    sync(device)
    seconds = time.perf_counter() - start
    return images / seconds, images / (busy_cpu_seconds() - busy), waited / seconds


def baseline(root: Path, args: argparse.Namespace, device: torch.device) -> tuple[float, float, float]:
    """The torchvision ImageFolder + DataLoader row: every JPEG decoded in every epoch."""
    reference = datasets.ImageFolder(str(root / "images"), transform=T.Compose([
        T.RandomResizedCrop(args.size, interpolation=T.InterpolationMode.BICUBIC), T.RandomHorizontalFlip(),
        T.ToTensor(), T.Normalize(MEAN, STD)]))
    loader = DataLoader(reference, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                        pin_memory=device.type == "cuda")
    endless = (batch for _ in iter(int, 1) for batch in loader)  # epochs on end
    result = time_batches(endless, args.batches, device, simulated_step(device, args.step_ms))
    endless.close()  # stop the worker processes before timing the other paths
    gc.collect()
    return result


def epochs(loader: TrainLoader) -> Iterator:
    """The loader's batches, epoch after epoch (on from the epoch it was last at)."""
    while True:
        yield from loader
        loader.set_epoch(loader.epoch + 1)


def semproxy_rows(cache, args: argparse.Namespace, device: torch.device) -> dict[str, list[tuple[float, ...]]]:
    """Per data path, ``--repeats`` measurements, the paths taking turns (so that the load of a shared
    machine drifts over all of them alike); each path has its own loader over the same cache and seed."""
    augment = BatchAugment(args.size, mean=MEAN, std=STD, interpolation="bicubic")
    loaders, names = {}, {}
    for name, what in PATHS.items():
        start = time.perf_counter()
        loaders[name] = TrainLoader(cache, args.batch_size, 2, augment, device=device, path=DataPath(name, "bench"))
        setup = f", {time.perf_counter() - start:.1f} s to upload" if name == "device-cache" else ""
        names[name] = f"semproxy cache, {name}: {what}{setup}"
    step = simulated_step(device, args.step_ms)
    rows: dict[str, list[tuple[float, ...]]] = {names[name]: [] for name in PATHS}
    for _ in range(args.repeats):
        for name, loader in loaders.items():
            seconds, batches = loader.host_seconds, loader.host_batches
            timed = time_batches(epochs(loader), args.batches, device, step)
            thread_ms = 1000 * (loader.host_seconds - seconds) / (loader.host_batches - batches)
            rows[names[name]].append((*timed, thread_ms))
    return rows


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=40)
    parser.add_argument("--per-class", type=int, default=30)
    parser.add_argument("--source-size", type=int, default=400, help="side of the generated JPEGs")
    parser.add_argument("--size", type=int, default=224, help="training crop size")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=15)
    parser.add_argument("--device", default="cpu", help="where batches go: cpu, cuda or cuda:N")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each row (the semproxy paths take turns)")
    parser.add_argument("--step-ms", type=float, default=0.0, help="simulated training step after each batch")
    parser.add_argument("--root", default=None, help="reuse a generated dataset here")
    parser.add_argument("--out", default=None, help="default: bench/results/data.md (data_gpu.md on a GPU)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    root = Path(args.root or tempfile.mkdtemp(prefix="semproxy-bench-"))
    synthetic.generate(root, num_classes=args.classes, images_per_class=args.per_class,
                       image_size=args.source_size)
    torch.set_num_threads(args.workers)
    rows = {"ImageFolder + DataLoader (JPEG decode per image)": [baseline(root, args, device)
                                                                 for _ in range(args.repeats)]}
    benchmark = load_benchmark("synthetic", root)  # every class, as ImageFolder reads them
    images = ImageList(benchmark.train.paths + benchmark.test.paths,
                       np.concatenate([benchmark.train.labels, benchmark.test.labels]))
    start = time.perf_counter()
    cache = build_train_cache(images, eval_resize_for(args.size), workers=args.workers,
                              cache_dir=tempfile.mkdtemp(prefix="semproxy-cache-"))  # fresh: build time is real
    cache_seconds = time.perf_counter() - start
    keep_freed_host_memory()  # as the trainer does on a CPU (after the baseline ran: it is not ours)
    rows.update(semproxy_rows(cache, args, device))

    step = f", a simulated {args.step_ms:g} ms step after each batch" if args.step_ms > 0 else ""
    lines = [f"Data path to {device}, {args.size} px crops from {args.source_size} px JPEGs, batch {args.batch_size}, "
             f"{args.workers} workers{step} ({machine(device)}); cache of {len(cache)} images "
             f"({len(cache.pixels) / 1e6:.0f} MB) built once in {cache_seconds:.1f} s; median of {args.repeats} "
             f"runs of {args.batches} batches (images/s of each run in the last column).",
             "", "| path | images/s | ratio | images per busy CPU-second | ratio | loader thread ms per batch | "
             "waiting for a batch | runs, images/s |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    medians = {name: np.median(np.array(runs), axis=0) for name, runs in rows.items()}
    base = next(iter(medians.values()))
    for name, (rate, per_cpu_second, wait, *thread_ms) in medians.items():
        runs = ", ".join(f"{run[0]:,.0f}" for run in rows[name])
        lines.append(f"| {name} | {rate:,.0f} | {rate / base[0]:.2f}x | {per_cpu_second:,.0f} | "
                     f"{per_cpu_second / base[1]:.2f}x | {f'{thread_ms[0]:.1f}' if thread_ms else '-'} | "
                     f"{f'{wait:.1%}' if args.step_ms > 0 else '-'} | {runs} |")
    publish(lines, args.out or RESULTS / ("data.md" if device.type == "cpu" else "data_gpu.md"))


if __name__ == "__main__":
    main()
