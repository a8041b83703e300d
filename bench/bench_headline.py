"""The headline: wall time of a whole ASHA search, and where the time went.

On a GPU: 64 trials of the VPTSP-G space (vptsp_gru) with ViT-S/16 (random weights) at 224 px on a
CUB-sized generated benchmark (200 classes of 59 images at 256 px: 100 training classes, 5,900
images), 15 epochs at most, 4 trials per GPU, ASHA. The paper code's equivalent, run one trial after
another, takes about 4 hours (166 ms x 91 iterations x 15 epochs x 64 trials on an RTX 3090).

Without a GPU the same command runs a scaled-down search and says so: the micro ViT on the synthetic
demo (experiments/synthetic.yaml), 16 trials of at most 6 epochs, one CPU per trial.

Both run ``tune.py`` itself in a subprocess while sampling GPU (nvidia-smi) or CPU utilisation, then
read every trial's reports: training, validation and data-wait seconds and images seen.

    python bench/bench_headline.py [--trials 64] [--max-epochs 15] [--per-gpu 4] [--keep DIR]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _runs import UtilisationSampler, cub_sized_config, trial_times
from _tables import RESULTS, machine, publish

ROOT = Path(__file__).resolve().parent.parent
PAPER_SEQUENTIAL_S = 0.166 * 91 * 15 * 64  # the paper code's 64 trials, one after another


def plan(gpu: bool, args: argparse.Namespace, work: Path) -> tuple[list[str], str]:
    """The tune.py arguments and a one-line description of the run."""
    common = ["--space", str(ROOT / "search_spaces" / "vptsp.yaml"), "--dataset", "synthetic",
              "--storage", str(work / "runs"), "--name", "headline", "--scheduler", "asha"]
    if gpu:
        cub_sized_config(work, compile=args.compile).dump(work / "headline.yaml")
        trials, epochs = args.trials, args.max_epochs
        return common + ["--config", str(work / "headline.yaml"), "--num-samples", str(trials), "--max-epochs",
                         str(epochs), "--gpus-per-trial", str(1 / args.per_gpu),
                         "--cpus-per-trial", str(max(1, (os.cpu_count() or 4) // args.per_gpu))], (
            f"headline: {trials} trials x <= {epochs} epochs, ViT-S/16 224 px, CUB-sized generated data, "
            f"{args.per_gpu} trials per GPU, compile: {args.compile}")
    trials, epochs = args.cpu_trials, args.cpu_max_epochs
    from semproxy.config import Config

    config = Config.load(ROOT / "experiments" / "synthetic.yaml").replace({
        "data_root": str(work / "data"), "cache_dir": str(work / "cache")})
    config.dump(work / "scaled.yaml")
    return common + ["--config", str(work / "scaled.yaml"), "--num-samples", str(trials), "--max-epochs",
                     str(epochs), "--grace-period", "1", "--cpus-per-trial", "1"], (
        f"SCALED DOWN (no GPU): {trials} trials x <= {epochs} epochs, micro ViT 32 px, synthetic demo data, "
        f"1 CPU per trial")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--max-epochs", type=int, default=15)
    parser.add_argument("--per-gpu", type=int, default=4, help="concurrent trials per GPU")
    parser.add_argument("--compile", choices=["off", "default", "cuda_graphs"], default="off",
                        help="the trials' training step (the config's compile; GPU run only; default: off)")
    parser.add_argument("--cpu-trials", type=int, default=16, help="trials of the scaled-down CPU run")
    parser.add_argument("--cpu-max-epochs", type=int, default=6)
    parser.add_argument("--keep", help="keep the run (data, cache, trials) in this folder")
    parser.add_argument("--out", default=str(RESULTS / "headline.md"))
    args = parser.parse_args()
    import torch

    gpu = torch.cuda.is_available()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="semproxy-headline-"))
    work.mkdir(parents=True, exist_ok=True)
    tune_args, description = plan(gpu, args, work)
    print(description, flush=True)
    command = [sys.executable, str(ROOT / "tune.py"), *tune_args]
    with UtilisationSampler(gpu) as sampler:
        start = time.time()
        subprocess.run(command, cwd=ROOT, check=True)
        wall = time.time() - start
    trials = trial_times(work / "runs" / "headline")
    first, last = min(t["start"] for t in trials), max(t["end"] for t in trials)
    train, val, wait = (sum(t[k] for t in trials) for k in ("train", "val", "wait"))
    total, images, epochs = sum(t["total"] for t in trials), sum(t["images"] for t in trials), sum(t["epochs"] for t in trials)
    unit = "GPU" if gpu else "CPU"
    shown = " ".join(a.replace(str(work), "RUN").replace(f"{ROOT}/", "") for a in command[1:])
    lines = [f"{description}; {machine('cuda' if gpu else 'cpu')}.", "",
             f"Command: `{shown}` (RUN: the run's folder).", "",
             "| measure | value |", "|---|---:|",
             f"| wall time of the whole command (data generation and caching included) | {wall / 60:.1f} min |",
             f"| from the first trial's start to the last trial's end | {(last - first) / 60:.1f} min |",
             f"| trials / trial-epochs run | {len(trials)} / {epochs} |",
             f"| training images per second, all trials together | {images / max(1e-9, last - first):,.0f} |",
             f"| mean {unit} utilisation while trials ran | {sampler.mean(first, last):.0f}% |",
             f"| trial time in training steps | {100 * train / total:.0f}% |",
             f"| of which waiting for a batch (host side) | {100 * wait / max(1e-9, train):.1f}% |",
             f"| trial time in validation | {100 * val / total:.0f}% |",
             f"| trial time elsewhere (checkpoints, reports, start-up) | {100 * (total - train - val) / total:.0f}% |"]
    if gpu:
        lines.append(f"| the paper code's 64 trials, sequential (RTX 3090) / this search | "
                     f"{PAPER_SEQUENTIAL_S / wall:.0f}x |")
    else:
        lines += ["", "This is NOT the headline: no GPU was available, so the search was scaled down to the micro "
                  "ViT on the synthetic demo. Run this script on a GPU machine for the 64-trial ViT-S/16 number."]
    publish(lines, args.out if gpu else str(Path(args.out).with_name("headline_cpu_scaled.md")))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
