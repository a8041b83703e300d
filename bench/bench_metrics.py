"""Time semproxy.metrics.retrieval_metrics against pytorch-metric-learning's AccuracyCalculator.

SOP-like random data: N embeddings of width D, classes of 2..2*per_class-2 items (mean per_class),
class centres plus noise, leave-one-out. Each (method, size) runs in its own subprocess, so the
peak RSS it reports is that method's alone; PML runs under a timeout (it builds a
(#classes x N) label-comparison matrix and loops over classes in Python).

Methods:
  ours      MAP@R, R-Precision, P@1, MAP@R(paper) and Recall@{1,2,4,8}: k = max(largest class, 8)
            (the paper's MAP@R looks at as many neighbours as the query's class has items)
  ours-sop  the same with Recall@{1,10,100,1000} (SOP's list): k = 1000
  pml       AccuracyCalculator(include=(precision_at_1, r_precision, mean_average_precision_at_r),
            k="max_bin_count"), CPU, default FaissKNN (IndexFlatL2): no Recall@K

    python bench/bench_metrics.py --sizes 10000 60000 --dim 384 --per-class 5
Writes the table to bench/results/metrics.md (with the machine) and prints it.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from _tables import machine as _machine

RESULTS = Path(__file__).resolve().parent / "results" / "metrics.md"
METHODS = ("ours", "ours-sop", "pml")


def make_data(n: int, dim: int, per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """SOP-like set: classes of 2..2*per_class-2 items (the last one trimmed), centres + noise."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, 2 * per_class - 1, size=n // 2 + 1)
    labels = np.repeat(np.arange(len(sizes)), sizes)[:n]
    centres = rng.standard_normal((labels.max() + 1, dim), dtype=np.float32)
    emb = centres[labels] + 2.0 * rng.standard_normal((n, dim), dtype=np.float32)
    return emb, labels


def _rss_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process, in MB, from /proc (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def worker(method: str, n: int, dim: int, per_class: int, repeats: int) -> dict:
    """Run one method on one size in this process and return its timing, memory and metrics."""
    import torch  # noqa: F401  (imported by both methods; before the RSS baseline)

    emb, labels = make_data(n, dim, per_class)
    if method == "pml":
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
        calc = AccuracyCalculator(include=("precision_at_1", "r_precision", "mean_average_precision_at_r"),
                                  k="max_bin_count", device=torch.device("cpu"))
        emb_t = torch.nn.functional.normalize(torch.from_numpy(emb), dim=1)
        lab_t = torch.from_numpy(labels)
        run = lambda: calc.get_accuracy(emb_t, lab_t)  # noqa: E731  (leave-one-out)
    else:
        from semproxy.metrics import retrieval_metrics
        ks = (1, 2, 4, 8) if method == "ours" else (1, 10, 100, 1000)
        run = lambda: retrieval_metrics(emb, labels, recall_ks=ks)  # noqa: E731
    before = _rss_mb("VmRSS")
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - t0)
    peak = _rss_mb("VmHWM")
    if method == "pml":
        result = {"map@r": result["mean_average_precision_at_r"], "precision@1": result["precision_at_1"]}
    return {"seconds": min(times), "peak_mb": peak, "extra_mb": peak - before,
            "map@r": result["map@r"], "precision@1": result["precision@1"],
            "classes": int(labels.max() + 1)}


def run_one(method: str, n: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, "--sizes", str(n), "--dim", str(args.dim),
           "--per-class", str(args.per_class), "--repeats", str(args.repeats)]
    timeout = args.pml_timeout if method == "pml" else None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        return {"skipped": f"timed out after {timeout} s"}
    except subprocess.CalledProcessError as err:
        return {"skipped": f"failed (exit {err.returncode}): {err.stderr.strip().splitlines()[-1:]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine() -> str:
    """The shared machine phrase plus what this bench also depends on (it uses no GPU)."""
    import faiss
    import pytorch_metric_learning as pml
    return (f"{_machine()}, no GPU used; Python {platform.python_version()}, numpy {np.__version__}, "
            f"faiss {faiss.__version__}, pytorch-metric-learning {pml.__version__}")


def fmt(r: dict, key: str, spec: str) -> str:
    return "skipped" if "skipped" in r else format(r[key], spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 60_000])
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--per-class", type=int, default=5, help="mean images per class (SOP: ~5)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per cell; the minimum is kept")
    parser.add_argument("--pml-timeout", type=float, default=900, help="seconds before PML is skipped")
    parser.add_argument("--skip-pml", action="store_true")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.sizes[0], args.dim, args.per_class, args.repeats)))
        return

    header = ("| N | classes | ours s (R@1,2,4,8) | ours s (R@1..1000) | PML s | PML / ours | "
              "peak RSS MB ours / ours-sop / PML | extra over pre-call MB ours / ours-sop / PML | "
              "MAP@R ours / PML | P@1 ours / PML |")
    rows = [header, "|" + "---|" * (header.count("|") - 1)]
    notes = []
    for n in args.sizes:
        res = {m: ({"skipped": "--skip-pml"} if m == "pml" and args.skip_pml else run_one(m, n, args)) for m in METHODS}
        for m, r in res.items():
            print(f"N={n} {m}: {r}", flush=True)
            if "skipped" in r:
                notes.append(f"N={n}: {m} skipped, {r['skipped']}")
        ours, sop, pml = res["ours"], res["ours-sop"], res["pml"]
        ratio = "n/a" if "skipped" in pml or "skipped" in ours else f"{pml['seconds'] / ours['seconds']:.1f}x"
        rows.append(
            f"| {n} | {fmt(ours, 'classes', 'd')} | {fmt(ours, 'seconds', '.2f')} | {fmt(sop, 'seconds', '.2f')} | "
            f"{fmt(pml, 'seconds', '.2f')} | {ratio} | "
            f"{fmt(ours, 'peak_mb', '.0f')} / {fmt(sop, 'peak_mb', '.0f')} / {fmt(pml, 'peak_mb', '.0f')} | "
            f"{fmt(ours, 'extra_mb', '.0f')} / {fmt(sop, 'extra_mb', '.0f')} / {fmt(pml, 'extra_mb', '.0f')} | "
            f"{fmt(ours, 'map@r', '.6f')} / {fmt(pml, 'map@r', '.6f')} | "
            f"{fmt(ours, 'precision@1', '.6f')} / {fmt(pml, 'precision@1', '.6f')} |")
    table = "\n".join(rows)
    print(table)
    for note in notes:
        print(note)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        "# Retrieval metrics: semproxy.metrics vs pytorch-metric-learning AccuracyCalculator\n\n"
        f"Measured {datetime.date.today().isoformat()} on: {machine()}.\n\n"
        f"Leave-one-out, random SOP-like embeddings (width {args.dim}, classes of 2..{2 * args.per_class - 2} "
        f"items, mean {args.per_class}), one subprocess per cell, best of {args.repeats} run(s). "
        "Times cover the metric call only (normalisation, kNN, metrics), not data generation or imports. "
        "Peak RSS is the whole process (Python + torch + data); 'extra' is peak minus RSS just before the call.\n\n"
        "`ours` searches k = max(largest class, 8); `ours-sop` k = 1000 for Recall@1000; PML searches "
        "k = largest class - 1 and computes no Recall@K. "
        "MAP@R may differ from PML's around the 6th decimal: PML ranks by L2 distance (IndexFlatL2), we by "
        "inner product (IndexFlatIP), and float32 near-ties (similarities ~1e-8 apart) can come out in "
        "the other order.\n\n"
        f"`python bench/bench_metrics.py --sizes {' '.join(map(str, args.sizes))} --dim {args.dim} "
        f"--per-class {args.per_class}`\n\n" + table + "\n" + "".join(f"\n- {note}" for note in notes) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
