"""Shared by the bench scripts: print a markdown table, write it under bench/results/, name the machine."""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

RESULTS = Path(__file__).resolve().parent / "results"


def publish(lines: list[str], out: str | Path) -> str:
    """Print the table and write it to ``out`` (folders created); returns the text."""
    table = "\n".join(lines)
    print(table)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(table + "\n")
    return table


def _proc_field(path: str, key: str) -> str | None:
    """The value of the first ``key: value`` line of a /proc file, or None where it cannot be read."""
    try:
        with open(path) as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith(key)), None)
    except OSError:
        return None


def machine(device: str | torch.device = "cpu") -> str:
    """One phrase naming the machine a table was measured on, the same in every bench's caption:
    the GPU (when ``device`` is a CUDA device), the CPU model, its cores, the RAM and torch's version."""
    import torch

    parts = [torch.cuda.get_device_name(device)] if torch.device(device).type == "cuda" else []
    parts += [_proc_field("/proc/cpuinfo", "model name") or platform.processor() or platform.machine(),
              f"{os.cpu_count()} CPU cores"]
    mem_kib = _proc_field("/proc/meminfo", "MemTotal")
    if mem_kib:
        parts.append(f"{int(mem_kib.split()[0]) / 2**20:.0f} GiB RAM")
    return ", ".join(parts + [f"torch {torch.__version__}"])
