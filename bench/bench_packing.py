"""Trial packing: aggregate training images/s of 1, 2 and 4 concurrent trials on one GPU.

Each packing runs N identical Ray Tune trials (GPU fraction 1/N each, the shared memory-mapped image
cache) of vptsp_gru with ViT-S/16 (random weights) at 224 px on a CUB-sized generated benchmark, for
a few epochs. A trial's throughput is its training images over its training seconds (validation is
not counted); the packing's is the sum over its trials, which run side by side. Also reports the
share of training time the step loop waited for a batch, and the mean GPU utilisation.

GPU only: without a GPU the script says so and records nothing.

    python bench/bench_packing.py [--packings 1 2 4] [--epochs 2]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from _runs import UtilisationSampler, cub_sized_config, trial_times
from _tables import RESULTS, publish

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
                   run_config=tune.RunConfig(name=f"pack{n}", storage_path=str(storage), verbose=0)).fit()
    trials = trial_times(storage / f"pack{n}")
    first, last = min(t["start"] for t in trials), max(t["end"] for t in trials)
    return {"n": n, "trials": len(trials), "images_per_s": sum(t["images"] / t["train"] for t in trials),
            "wait": sum(t["wait"] for t in trials) / sum(t["train"] for t in trials),
            "utilisation": sampler.mean(first, last)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packings", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS / "packing.md"))
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("no GPU: trial packing is measured on a GPU only; nothing was measured or recorded")
        return
    import ray

    from semproxy.prepared import prepare_data

    work = Path(tempfile.mkdtemp(prefix="semproxy-packing-"))
    config = cub_sized_config(work, eval_every=args.epochs, epochs=args.epochs)
    data = prepare_data(config)  # once: every trial maps the same cache
    ray.init(include_dashboard=False)
    start = time.time()
    results = [run_packing(n, config.to_mapping(), data, args.epochs, work / "runs") for n in args.packings]
    one = next((r for r in results if r["n"] == 1), None)
    lines = [f"Trial packing on one {torch.cuda.get_device_name()}: vptsp_gru, ViT-S/16 224 px, CUB-sized generated "
             f"data, {args.epochs} epochs per trial, torch {torch.__version__} ({(time.time() - start) / 60:.1f} min).",
             "", "| trials per GPU (fraction) | images/s, all trials | vs 1 x 1.0 | waiting for data | GPU utilisation |",
             "|---|---:|---:|---:|---:|"]
    for r in results:
        ratio = f"{r['images_per_s'] / one['images_per_s']:.2f}x" if one else "-"
        lines.append(f"| {r['n']} ({1 / r['n']:g}) | {r['images_per_s']:,.0f} | {ratio} | {100 * r['wait']:.1f}% | "
                     f"{r['utilisation']:.0f}% |")
    publish(lines, args.out)


if __name__ == "__main__":
    main()
