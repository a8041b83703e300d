"""The bench scripts' own logic, small: what they measure must be what they say."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))


def test_offloaded_bank_leaves_only_the_batch_rows_on_the_device():
    from bench_offload import resident

    meta = torch.device("meta")
    small, large = resident(50, True, meta, 8), resident(400, True, meta, 8)
    assert small["tables"] == large["tables"] == 0
    assert large["host_tables"] == 8 * small["host_tables"] > 0
    assert small["gathered"] == large["gathered"] == small["host_tables"] // 50 * 8
    in_memory = resident(400, False, meta, 8)
    assert in_memory["tables"] == large["host_tables"] and in_memory["host_tables"] == 0
    assert in_memory["other"] == large["other"]  # per-class states and proxies are on the device either way


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_packing_without_a_gpu_says_so_and_records_nothing(tmp_path):
    out = tmp_path / "packing.md"
    run = subprocess.run([sys.executable, str(BENCH / "bench_packing.py"), "--out", str(out)],
                         capture_output=True, text=True, check=True)
    assert "no GPU" in run.stdout and not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_gpu_check_without_a_gpu_says_so_and_records_nothing(tmp_path):
    out = tmp_path / "gpu_check.md"
    run = subprocess.run([sys.executable, str(BENCH / "gpu_check.py"), "--out", str(out)],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "no GPU" in run.stdout and not out.exists()


def test_gpu_check_runs_every_bench_script_and_the_gpu_tests(tmp_path):
    from gpu_check import steps

    commands = [" ".join(command) for _, command, _ in steps(tmp_path)]
    scripts = {p.name for p in BENCH.glob("bench_*.py")} - {"bench_data.py", "bench_asha.py"}  # CPU-only benches
    assert all(any(script in c for c in commands) for script in scripts), scripts
    assert any("-m gpu" in c for c in commands) and any("--gpus-per-trial 0.5" in c for c in commands)
    assert all(str(tmp_path) in c for c in commands if "bench_" in c)  # never over the recorded results
