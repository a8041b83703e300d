"""The bench scripts' own logic, small: what they measure must be what they say."""
from __future__ import annotations

import os
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
    scripts = {p.name for p in BENCH.glob("bench_*.py")} - {"bench_asha.py", "bench_demo.py"}  # CPU-only
    assert all(any(script in c for c in commands) for script in scripts), scripts
    assert any("-m gpu" in c for c in commands) and any("--gpus-per-trial 0.5" in c for c in commands)
    assert all(str(tmp_path) in c for c in commands if "bench_" in c)  # never over the recorded results


def test_the_step_bench_forms_batches_of_any_size():
    """B=256 at K=2 is 128 classes: more than CUB's 100, which the bench used to draw them from."""
    from bench_step import measure, num_classes_for

    assert num_classes_for(32) == 100 and num_classes_for(256) == 128
    result = measure("vptsp_gru", 256, 1, "cpu", backbone="vit_micro_patch8_32")
    assert result["batch"] == 256 and result["step_s"] > 0
    assert result["peak_mib"] is None and result["compile_s"] == 0.0  # no per-configuration peak on the CPU


def _table(text: str) -> dict[str, dict[str, str]]:
    """A markdown table's rows by their first cell, each a mapping of header -> cell."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = [dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")))) for line in lines[2:]]
    return {row[header[0]]: row for row in rows}


def test_the_operations_table_sets_each_method_beside_a_recorded_run(tmp_path):
    counts, out = tmp_path / "ops.json", tmp_path / "ops.md"
    command = [sys.executable, str(BENCH / "bench_step.py"), "--ops", "--methods", "linear", "vpt",
               "--backbone", "vit_micro_patch8_32", "--batches", "8", "--out", str(out)]
    subprocess.run(command + ["--json", str(counts)], capture_output=True, text=True, check=True)
    subprocess.run(command + ["--before", str(counts)], capture_output=True, text=True, check=True)
    table = _table(out.read_text())
    for row in table.values():  # counts are deterministic: the same run twice
        assert (row["ops before"], row["kernels before"]) == (row["ops after"], row["kernels after"])
        assert row["kernels after / before"] == "1.00" and row["casts after"] == "0" and row["peak MiB"] == ""
    assert int(table["linear"]["kernels after"]) < int(table["vpt"]["kernels after"])


def test_the_packing_bench_runs_its_own_mps_daemon_and_leaves_the_environment_as_it_was(tmp_path, monkeypatch):
    """A stand-in nvidia-cuda-mps-control on PATH records how it was called (the real one needs a GPU)."""
    from bench_packing import mps_daemon

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("CUDA_MPS_PIPE_DIRECTORY", raising=False)
    with pytest.raises(RuntimeError, match="nvidia-cuda-mps-control is not on PATH"):
        with mps_daemon(tmp_path / "work"):
            pass
    tools, calls = tmp_path / "bin", tmp_path / "calls"
    tools.mkdir()
    control = tools / "nvidia-cuda-mps-control"
    control.write_text(f'#!/bin/sh\necho "$* pipe=$CUDA_MPS_PIPE_DIRECTORY stdin=$(cat)" >> {calls}\n')
    control.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}:/usr/bin:/bin")
    with mps_daemon(tmp_path / "work"):
        inside = os.environ["CUDA_MPS_PIPE_DIRECTORY"]
    assert inside == str(tmp_path / "work" / "mps-pipe") and "CUDA_MPS_PIPE_DIRECTORY" not in os.environ
    started, stopped = calls.read_text().splitlines()
    assert started == f"-d pipe={inside} stdin=" and stopped == f" pipe={inside} stdin=quit"
    control.write_text("#!/bin/sh\necho 'An instance of this daemon is already running' >&2\nexit 1\n")
    with pytest.raises(RuntimeError, match="exited 1: An instance of this daemon is already running"):
        with mps_daemon(tmp_path / "work"):
            pass
    assert "CUDA_MPS_PIPE_DIRECTORY" not in os.environ
