"""Trial packing: aggregate training images/s of 1, 2, 4 and 8 concurrent trials on one GPU, with and
without NVIDIA MPS.

Each packing runs N identical Ray Tune trials (GPU fraction 1/N each, the shared memory-mapped image
cache) of vptsp_gru with ViT-S/16 (random weights) at 224 px on a CUB-sized generated benchmark, for
a few epochs. A trial's throughput is its training images over its training seconds (validation is
not counted); the packing's is the sum over its trials, which run side by side. Also reports the
share of training time the step loop waited for a batch, and the mean GPU utilisation.

Without MPS the GPU time-slices between the trials' processes; with MPS (``--mps on`` or ``both``)
their kernels run concurrently. The bench starts its own MPS control daemon (private pipe and log
folders, stopped at the end) and a fresh Ray session for each mode, so the trials' processes connect
to it; where the daemon cannot start (no ``nvidia-cuda-mps-control``, a container without the right),
the table says so and only the default mode is measured.

GPU only: without a GPU the script says so and records nothing.

    python bench/bench_packing.py [--packings 1 2 4 8] [--epochs 2] [--mps off|on|both] [--compile off]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from _runs import UtilisationSampler, cub_sized_config, trial_times
from _tables import RESULTS, machine, publish

ROOT = Path(__file__).resolve().parent.parent


def run_packing(n: int, base: dict, data, epochs: int, storage: Path) -> dict:
    """N concurrent trials with 1/N of the GPU each; their summed throughput and waits."""
    from ray import tune

    sys.path.insert(0, str(ROOT))
    from trainables import train_dml

    cpus = max(1, (os.cpu_count() or 4) // n)
    trainable = tune.with_resources(tune.with_parameters(train_dml, base=base, data=data), {"cpu": cpus, "gpu": 1 / n})
    with UtilisationSampler(gpu=True) as sampler:
        tune.Tuner(trainable, param_space={"epochs": epochs},
                   tune_config=tune.TuneConfig(num_samples=n, max_concurrent_trials=n),
                   run_config=tune.RunConfig(name=storage.name, storage_path=str(storage.parent), verbose=0)).fit()
    trials = trial_times(storage)
    first, last = min(t["start"] for t in trials), max(t["end"] for t in trials)
    return {"n": n, "trials": len(trials), "images_per_s": sum(t["images"] / t["train"] for t in trials),
            "wait": sum(t["wait"] for t in trials) / sum(t["train"] for t in trials),
            "utilisation": sampler.mean(first, last)}


@contextmanager
def mps_daemon(work: Path) -> Iterator[None]:
    """An MPS control daemon private to this bench, its folders in the process's environment (which
    Ray's workers inherit); stopped, and the environment restored, on exit. Raises RuntimeError with
    the reason when it cannot start."""
    control = shutil.which("nvidia-cuda-mps-control")
    if control is None:
        raise RuntimeError("nvidia-cuda-mps-control is not on PATH")
    folders = {"CUDA_MPS_PIPE_DIRECTORY": work / "mps-pipe", "CUDA_MPS_LOG_DIRECTORY": work / "mps-log"}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    saved = {name: os.environ.get(name) for name in folders}
    os.environ.update({name: str(folder) for name, folder in folders.items()})
    started = subprocess.run([control, "-d"], stdin=subprocess.DEVNULL, capture_output=True, text=True)
    try:
        if started.returncode != 0:
            raise RuntimeError(f"nvidia-cuda-mps-control -d exited {started.returncode}: "
                               f"{(started.stderr or started.stdout).strip()[:200]}")
        yield
    finally:
        if started.returncode == 0:
            subprocess.run([control], input="quit\n", capture_output=True, text=True)
        for name, value in saved.items():
            os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)


def measure_mode(mps: bool, packings: list[int], config, data, epochs: int, work: Path) -> list[dict]:
    """Every packing in one Ray session started for this mode (after the MPS daemon, when on)."""
    import ray

    ray.init(address="local", include_dashboard=False)
    try:
        return [{**run_packing(n, config.to_mapping(), data, epochs, work / "runs" / f"{'mps' if mps else 'plain'}{n}"),
                 "mps": mps} for n in packings]
    finally:
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packings", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--mps", choices=["off", "on", "both"], default="both",
                        help="measure without MPS, with it, or both (default: both, where MPS can start)")
    parser.add_argument("--compile", choices=["off", "default", "cuda_graphs"], default="off",
                        help="the trials' training step (the config's compile; default: off)")
    parser.add_argument("--out", default=str(RESULTS / "packing.md"))
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("no GPU: trial packing is measured on a GPU only; nothing was measured or recorded")
        return
    from semproxy.prepared import prepare_data

    work = Path(tempfile.mkdtemp(prefix="semproxy-packing-"))
    config = cub_sized_config(work, eval_every=args.epochs, epochs=args.epochs, compile=args.compile)
    data = prepare_data(config)  # once: every trial maps the same cache
    start, results, mps_note = time.time(), [], ""
    if args.mps in ("off", "both"):
        results += measure_mode(False, args.packings, config, data, args.epochs, work)
    if args.mps in ("on", "both"):
        try:
            with mps_daemon(work):
                results += measure_mode(True, args.packings, config, data, args.epochs, work)
        except RuntimeError as error:
            mps_note = f" MPS not measured: {error}."
    publish(table(results, args, machine("cuda"), time.time() - start, mps_note), args.out)


def table(results: list[dict], args: argparse.Namespace, machine_phrase: str, seconds: float,
          mps_note: str) -> list[str]:
    """The packing table: each row's throughput against one trial alone without MPS."""
    one: Optional[dict] = next((r for r in results if r["n"] == 1 and not r["mps"]), None)
    lines = [f"Trial packing on one {machine_phrase}: vptsp_gru, ViT-S/16 224 px, CUB-sized generated data, "
             f"{args.epochs} epochs per trial, compile: {args.compile} ({seconds / 60:.1f} min).{mps_note}", "",
             "| trials per GPU (fraction) | MPS | images/s, all trials | vs 1 trial without MPS | waiting for data | "
             "GPU utilisation |", "|---|---|---:|---:|---:|---:|"]
    for r in results:
        ratio = f"{r['images_per_s'] / one['images_per_s']:.2f}x" if one else "-"
        lines.append(f"| {r['n']} ({1 / r['n']:g}) | {'on' if r['mps'] else 'off'} | {r['images_per_s']:,.0f} | "
                     f"{ratio} | {100 * r['wait']:.1f}% | {r['utilisation']:.0f}% |")
    return lines


if __name__ == "__main__":
    main()
