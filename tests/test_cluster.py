"""Cluster mode: shared-storage checks, and a real two-node Ray cluster on loopback running trials on both."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from processes import descendants, processes_mentioning
from semproxy.search import cluster
from semproxy.search.results import read_trials

ROOT = Path(__file__).parent.parent


def test_filesystem_type_uses_the_longest_mount_point(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text("/dev/sda1 / ext4 rw 0 0\nserver:/export /mnt/shared nfs4 rw 0 0\n"
                      "tmpfs /mnt/shared/tmp tmpfs rw 0 0\n")
    assert cluster.filesystem_type(Path("/mnt/shared/runs/x"), str(mounts)) == "nfs4"
    assert cluster.filesystem_type(Path("/mnt/shared/tmp/x"), str(mounts)) == "tmpfs"
    assert cluster.filesystem_type(Path("/home/me"), str(mounts)) == "ext4"
    assert cluster.filesystem_type(Path("/mnt/sharedother"), str(mounts)) == "ext4"


def test_local_paths_are_refused_only_on_multi_host_clusters(monkeypatch, tmp_path):
    here = [{"Alive": True, "NodeManagerHostname": socket.gethostname()}] * 2
    two_hosts = [{"Alive": True, "NodeManagerHostname": "gpu-01"}, {"Alive": True, "NodeManagerHostname": "gpu-02"},
                 {"Alive": False, "NodeManagerHostname": "old"}]
    assert cluster.cluster_hosts(two_hosts) == {"gpu-01", "gpu-02"}
    assert cluster.unshared_paths({"--storage": str(tmp_path)}, here) == []
    monkeypatch.setattr(cluster, "filesystem_type", lambda path: "nfs4" if "shared" in str(path) else "ext4")
    problems = cluster.unshared_paths({"--storage": "/home/me/runs", "data root": "/shared/cub",
                                       "cloud": "s3://bucket/runs"}, two_hosts)
    assert problems == ["--storage /home/me/runs (ext4 filesystem)"]


@pytest.fixture
def two_node_cluster(tmp_path):
    """A head and a worker node on loopback, in their own temp dir so that only they are stopped after."""
    ray_cli = str(Path(sys.executable).parent / "ray")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    port, temp_dir = 46379, tempfile.mkdtemp(prefix="semproxy-ray-")
    common = ["--num-cpus", "1", "--num-gpus", "0", "--disable-usage-stats", "--node-ip-address", "127.0.0.1"]
    try:
        subprocess.run([ray_cli, "start", "--head", "--port", str(port), "--include-dashboard", "false",
                        "--temp-dir", temp_dir, *common], env=env, check=True, capture_output=True, timeout=120)
        subprocess.run([ray_cli, "start", "--address", f"127.0.0.1:{port}", *common], env=env, check=True,
                       capture_output=True, timeout=120)
        yield f"127.0.0.1:{port}", env
    finally:  # not `ray stop`: that would stop every Ray cluster on this machine
        ours = descendants(processes_mentioning(temp_dir))
        ours |= descendants(processes_mentioning("ray.util.client.server", f":{port} "))  # outlives `ray start`
        for pid in ours:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_trials_run_on_both_nodes_of_a_loopback_cluster(two_node_cluster, tmp_path):
    address, env = two_node_cluster
    (tmp_path / "space.yaml").write_text("params:\n  method: vptsp_gru\n  lr: {loguniform: [0.0005, 0.02]}\n")
    run = subprocess.run(
        [sys.executable, str(ROOT / "tune.py"), "--space", "space.yaml", "--dataset", "synthetic", "--address",
         address, "--data-root", str(tmp_path / "data"), "--storage", str(tmp_path / "runs"), "--name", "c",
         "--num-samples", "4", "--max-epochs", "2", "--scheduler", "fifo"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "2 at a time" in run.stdout
    nodes = set()
    for row in read_trials(tmp_path / "runs" / "c"):
        assert row.status == "TERMINATED"
        nodes.update(pd.read_csv(Path(row.path) / "progress.csv")["node_id"])
    assert len(nodes) == 2, nodes
