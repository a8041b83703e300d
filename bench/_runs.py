"""Shared by the bench scripts that run searches: utilisation sampling and per-trial time accounting."""
from __future__ import annotations

import math
import subprocess
import threading
import time
from pathlib import Path


def cpu_jiffies() -> tuple[float, float]:
    """(idle, total) CPU time of the whole machine in clock ticks, from /proc/stat (Linux)."""
    fields = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return fields[3] + fields[4], sum(fields)  # idle + iowait


def busy_cpu_seconds() -> float:
    """CPU seconds the machine has spent busy (all cores, all processes) since boot."""
    import os

    idle, total = cpu_jiffies()
    return (total - idle) / os.sysconf("SC_CLK_TCK")


def cub_sized_config(work: Path, **changes):
    """The paper's CUB ViT-S/16 setting on a generated CUB-sized benchmark with random weights.

    200 classes of 59 images at 256 px: 100 training classes and 5,900 training images, as CUB's;
    random weights and generated images cost exactly the compute of the real run.
    """
    from semproxy.config import Config

    root = Path(__file__).resolve().parent.parent
    return Config.load(root / "experiments" / "cub200_vit_s.yaml").replace({
        "backbone": "vit_small_patch16_224", "pretrained": False, "weights": None, "dataset": "synthetic",
        "synthetic_classes": 200, "synthetic_per_class": 59, "synthetic_size": 256,
        "data_root": str(work / "data"), "cache_dir": str(work / "cache"), **changes})


class UtilisationSampler:
    """Mean GPU (nvidia-smi) or CPU (/proc/stat) utilisation in percent, sampled twice a second."""

    def __init__(self, gpu: bool) -> None:
        self.gpu, self.samples, self._stop = gpu, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _read(self) -> float:
        if self.gpu:
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, check=True).stdout
            return sum(float(v) for v in out.split()) / max(1, len(out.split()))
        return self._cpu_percent()

    def _cpu_percent(self) -> float:
        """Busy share of all CPUs since the previous reading."""
        idle, total = cpu_jiffies()
        last_idle, last_total = getattr(self, "_last", (0.0, 0.0))
        self._last = (idle, total)
        return 100.0 * (1 - (idle - last_idle) / max(1e-9, total - last_total))

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.samples.append((time.time(), self._read()))

    def __enter__(self) -> "UtilisationSampler":
        self._read()
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join()

    def mean(self, start: float = 0.0, end: float = math.inf) -> float:
        values = [v for t, v in self.samples if start <= t <= end]
        return sum(values) / len(values) if values else math.nan


def trial_times(run_dir: Path) -> list[dict]:
    """Per trial: epochs, train / validation / data-wait / total seconds, images, first and last report time."""
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(str(run_dir))
    rows = []
    for frame in analysis.trial_dataframes.values():
        if frame is None or not len(frame) or "seconds" not in frame:
            continue
        rows.append({"epochs": int(frame["training_iteration"].max()), "train": float(frame["seconds"].sum()),
                     "val": float(frame.get("val_seconds", frame["seconds"] * 0).sum()),
                     "wait": float(frame.get("data_wait", frame["seconds"] * 0).sum()),
                     "images": int(frame.get("images", frame["seconds"] * 0).sum()),
                     "total": float(frame["time_total_s"].max()),
                     "start": float(frame["timestamp"].min() - frame["time_this_iter_s"].iloc[0]),
                     "end": float(frame["timestamp"].max())})
    return rows
