"""Every GPU-only path in one command: the GPU tests, a short GPU smoke of each bench, a packed search.

    python bench/gpu_check.py [--budget 600] [--out bench/results/gpu_check.md]

Runs, each in its own process with a time limit, in order of importance: ``pytest -m gpu`` (the
tests that skip without CUDA), a 2-trial search with ``--gpus-per-trial 0.5`` (two trials share
the GPU), and each bench script at a small size writing into a temporary folder (so the recorded
results stay as they are). Prints a table of what passed and how long it took, and writes it with
the machine's name. Without a GPU it says so and records nothing. On a bare GPU machine that has
torch, first ``bash ../shared/tools/gpu/bundle.sh`` packs ray, optuna, faiss and PML to carry along.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _tables import RESULTS, machine, publish

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"


def steps(work: Path) -> list[tuple[str, list[str], int]]:
    """(name, command, time limit in seconds), most important first."""
    py = sys.executable
    return [
        ("GPU tests (pytest -m gpu)", [py, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider"], 180),
        ("2-trial search, --gpus-per-trial 0.5", [py, str(ROOT / "tune.py"), "--space", "search_spaces/vptsp.yaml",
                                                  "--smoke", "--num-samples", "2", "--gpus-per-trial", "0.5",
                                                  "--storage", str(work / "runs"),
                                                  "--data-root", str(work / "synthetic")], 150),
        ("bench_step (B=16, vpt + vptsp_gru)", [py, str(BENCH / "bench_step.py"), "--device", "cuda", "--batches",
                                                "16", "--methods", "vpt", "vptsp_gru", "--steps", "2",
                                                "--out", str(work / "step.md")], 120),
        ("bench_step --compile cuda_graphs (B=16, vptsp_gru)",
         [py, str(BENCH / "bench_step.py"), "--device", "cuda", "--compile", "cuda_graphs", "--batches", "16",
          "--methods", "vptsp_gru", "--steps", "3", "--out", str(work / "step_compiled.md")], 180),
        ("bench_step --pair (B=16)", [py, str(BENCH / "bench_step.py"), "--device", "cuda", "--pair", "--batches",
                                      "16", "--steps", "2", "--out", str(work / "step.md")], 90),
        ("bench_offload (100 classes)", [py, str(BENCH / "bench_offload.py"), "--classes", "100", "--steps", "2",
                                         "--out", str(work / "offload.md")], 90),
        ("bench_metrics (10k, faiss)", [py, str(BENCH / "bench_metrics.py"), "--sizes", "10000", "--skip-pml",
                                        "--output", str(work / "metrics.md")], 90),
        ("bench_data (device-resident images)", [py, str(BENCH / "bench_data.py"), "--device", "cuda", "--classes",
                                                 "40", "--per-class", "30", "--batches", "20",
                                                 "--out", str(work / "data.md")], 120),
        ("bench_packing (1, 2 trials, 1 epoch)", [py, str(BENCH / "bench_packing.py"), "--packings", "1", "2",
                                                  "--epochs", "1", "--mps", "off", "--out", str(work / "packing.md")], 240),
        ("bench_headline (4 trials x 2 epochs)", [py, str(BENCH / "bench_headline.py"), "--trials", "4",
                                                  "--max-epochs", "2", "--out", str(work / "headline.md")], 240),
    ]


def run_step(command: list[str], limit: float, log: Path) -> tuple[str, float, str]:
    """(outcome, seconds, last line of output) of one step."""
    start = time.time()
    with open(log, "w") as out:
        try:
            code = subprocess.run(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=limit).returncode
        except subprocess.TimeoutExpired:
            code = None
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    outcome = "ok" if code == 0 else (f"TIMEOUT ({limit:.0f} s)" if code is None else f"FAILED (exit {code})")
    return outcome, time.time() - start, (lines[-1][:100] if lines else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=600, help="seconds for everything (default: 600)")
    parser.add_argument("--out", default=str(RESULTS / "gpu_check.md"), help="where the table is written")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("no GPU: the GPU paths can only be checked on a GPU; nothing was run or recorded")
        return 2
    work = Path(tempfile.mkdtemp(prefix="semproxy-gpu-check-"))
    start, rows = time.time(), []
    for name, command, limit in steps(work):
        left = args.budget - (time.time() - start)
        if left <= 5:
            rows.append((name, "not run (budget spent)", 0.0, ""))
            continue
        log = work / f"step{len(rows)}.log"
        outcome, seconds, last = run_step(command, min(limit, left), log)
        rows.append((name, outcome, seconds, last))
        print(f"{outcome:>10}  {seconds:6.1f} s  {name}  (log: {log})", flush=True)
    lines = [f"GPU check on {machine('cuda')}, "
             f"{time.time() - start:.0f} s in all (budget {args.budget:.0f} s); logs in {work}.", "",
             "| step | outcome | seconds | last line of its output |", "|---|---|---:|---|"]
    lines += [f"| {name} | {outcome} | {seconds:.0f} | {last.replace('|', '/')} |" for name, outcome, seconds, last in rows]
    publish(lines, args.out)
    return 0 if all(outcome == "ok" for _, outcome, _, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
