"""Data path: cached, batched augmentation vs a JPEG-decoding torchvision ImageFolder DataLoader.

Both produce the same training batches (RandomResizedCrop + flip + normalise, B x 3 x S x S float)
from the same JPEG files, with the same number of CPU workers. Reports images per second of wall
time and per busy CPU-second of the machine (all cores and processes, from /proc/stat: what one core
delivers). Prints a table and writes bench/results/data.md.

    python bench/bench_data.py [--classes 40 --per-class 30 --source-size 400 --size 224 --workers 2]
"""
from __future__ import annotations

import argparse
import gc
import os
import platform
import tempfile
import time
from pathlib import Path

from _runs import busy_cpu_seconds
from _tables import RESULTS, publish

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms as T

from semproxy.data import BatchAugment, ImageList, TrainLoader, build_train_cache, eval_resize_for, load_benchmark
from semproxy.data.readers import synthetic
from semproxy.host_memory import keep_freed_host_memory


def time_batches(batches, count: int, warmup: int = 2) -> tuple[float, float]:
    """Images per second of wall time, and per busy CPU-second of the whole machine (all processes)."""
    iterator = iter(batches)
    for _ in range(warmup):
        next(iterator)
    start, busy = time.perf_counter(), busy_cpu_seconds()
    images = 0
    for _ in range(count):
        batch = next(iterator)[0]
        images += batch.shape[0]
    return images / (time.perf_counter() - start), images / (busy_cpu_seconds() - busy)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=40)
    parser.add_argument("--per-class", type=int, default=30)
    parser.add_argument("--source-size", type=int, default=400, help="side of the generated JPEGs")
    parser.add_argument("--size", type=int, default=224, help="training crop size")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=15)
    parser.add_argument("--root", default=None, help="reuse a generated dataset here")
    parser.add_argument("--out", default=str(RESULTS / "data.md"))
    args = parser.parse_args()

    root = Path(args.root or tempfile.mkdtemp(prefix="semproxy-bench-"))
    synthetic.generate(root, num_classes=args.classes, images_per_class=args.per_class,
                       image_size=args.source_size)
    torch.set_num_threads(args.workers)
    mean = std = (0.5, 0.5, 0.5)

    reference = datasets.ImageFolder(str(root / "images"), transform=T.Compose([
        T.RandomResizedCrop(args.size, interpolation=T.InterpolationMode.BICUBIC), T.RandomHorizontalFlip(),
        T.ToTensor(), T.Normalize(mean, std)]))
    loader = DataLoader(reference, batch_size=args.batch_size, shuffle=True, num_workers=args.workers)
    endless = (batch for _ in iter(int, 1) for batch in loader)  # epochs on end
    baseline = time_batches(endless, args.batches)
    endless.close()  # stop the worker processes before timing the other path
    gc.collect()

    benchmark = load_benchmark("synthetic", root)  # every class, as ImageFolder reads them
    images = ImageList(benchmark.train.paths + benchmark.test.paths,
                       np.concatenate([benchmark.train.labels, benchmark.test.labels]))
    start = time.perf_counter()
    cache = build_train_cache(images, eval_resize_for(args.size), workers=args.workers,
                              cache_dir=tempfile.mkdtemp(prefix="semproxy-cache-"))  # fresh: build time is real
    cache_seconds = time.perf_counter() - start
    keep_freed_host_memory()  # as the trainer does on a CPU (after the baseline ran: it is not ours)
    augment = BatchAugment(args.size, mean=mean, std=std, interpolation="bicubic")
    ours_loader = TrainLoader(cache, args.batch_size, 2, augment, device="cpu")
    ours_loader.set_epoch(0)

    def epochs():
        epoch = 0
        while True:
            ours_loader.set_epoch(epoch)
            yield from ours_loader
            epoch += 1

    ours = time_batches(epochs(), args.batches)
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}"
    rows = [("ImageFolder + DataLoader (JPEG decode per image)", *baseline),
            ("semproxy cache + batched augmentation", *ours)]
    lines = [f"Data path, {args.size} px crops from {args.source_size} px JPEGs, batch {args.batch_size}, "
             f"{args.workers} workers ({machine}); cache built once in {cache_seconds:.1f} s for {len(cache)} images.",
             "", "| path | images/s | ratio | images per busy CPU-second | ratio |", "|---|---:|---:|---:|---:|"]
    for name, rate, per_cpu_second in rows:
        lines.append(f"| {name} | {rate:,.0f} | {rate / baseline[0]:.2f}x | {per_cpu_second:,.0f} | "
                     f"{per_cpu_second / baseline[1]:.2f}x |")
    publish(lines, args.out)


if __name__ == "__main__":
    main()
