"""ASHA's savings: the same seeded search with and without early stopping, on the synthetic dataset.

For each seed, ``tune.py`` runs the space twice with the same number of trials, once with ASHA and
once with FIFO (every trial to the end), and the script counts the trial-epochs each used and the
best validation MAP@R each found. Prints a table (and averages over the seeds) and writes
bench/results/asha.md.

    python bench/bench_asha.py [--seeds 1 2 3] [--num-samples 12] [--max-epochs 8]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _tables import RESULTS, machine, publish

ROOT = Path(__file__).resolve().parent.parent


def run_search(space: str, scheduler: str, seed: int, args, workdir: Path) -> dict:
    from semproxy.search.results import read_trials

    name = f"{scheduler}-{seed}"
    command = [sys.executable, str(ROOT / "tune.py"), "--space", space, "--dataset", "synthetic",
               "--data-root", str(workdir / "data"), "--storage", str(workdir / "runs"), "--name", name,
               "--seed", str(seed), "--num-samples", str(args.num_samples), "--max-epochs", str(args.max_epochs),
               "--grace-period", str(args.grace_period), "--reduction-factor", str(args.reduction_factor),
               "--scheduler", scheduler]
    start = time.perf_counter()
    subprocess.run(command, cwd=workdir, check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    rows = read_trials(workdir / "runs" / name)
    return {"epochs": sum(r.epochs for r in rows), "best": max(r.best_map_at_r for r in rows), "seconds": seconds}


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default=str(ROOT / "search_spaces" / "vptsp.yaml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--num-samples", type=int, default=12)
    parser.add_argument("--max-epochs", type=int, default=8)
    parser.add_argument("--grace-period", type=int, default=1)
    parser.add_argument("--reduction-factor", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS / "asha.md"))
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    workdir = Path(tempfile.mkdtemp(prefix="semproxy-asha-"))
    rows = []
    for seed in args.seeds:
        asha = run_search(args.space, "asha", seed, args, workdir)
        fifo = run_search(args.space, "fifo", seed, args, workdir)
        rows.append((seed, asha, fifo))
        print(f"  seed {seed}: asha {asha}, fifo {fifo}", file=sys.stderr)
    lines = [f"ASHA vs FIFO on the synthetic dataset (micro ViT), space {Path(args.space).name}, "
             f"{args.num_samples} trials x up to {args.max_epochs} epochs, grace {args.grace_period}, "
             f"reduction factor {args.reduction_factor}; {machine()}.", "",
             "| seed | ASHA trial-epochs | FIFO trial-epochs | epochs ratio | ASHA best val MAP@R | FIFO best val MAP@R "
             "| MAP@R ratio | ASHA s | FIFO s |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for seed, asha, fifo in rows:
        lines.append(f"| {seed} | {asha['epochs']} | {fifo['epochs']} | {asha['epochs'] / fifo['epochs']:.2f} | "
                     f"{asha['best']:.4f} | {fifo['best']:.4f} | {asha['best'] / fifo['best']:.3f} | "
                     f"{asha['seconds']:.0f} | {fifo['seconds']:.0f} |")
    lines.append(
        f"| mean | {_mean(a['epochs'] for _, a, _ in rows):.1f} | {_mean(f['epochs'] for _, _, f in rows):.1f} | "
        f"{_mean(a['epochs'] / f['epochs'] for _, a, f in rows):.2f} | {_mean(a['best'] for _, a, _ in rows):.4f} | "
        f"{_mean(f['best'] for _, _, f in rows):.4f} | {_mean(a['best'] / f['best'] for _, a, f in rows):.3f} | "
        f"{_mean(a['seconds'] for _, a, _ in rows):.0f} | {_mean(f['seconds'] for _, _, f in rows):.0f} |")
    publish(lines, args.out)


if __name__ == "__main__":
    main()
