"""Storage that every node of a Ray cluster can see: checked before a multi-host search starts.

Since Ray 2.7 trial directories are not synced to the head node, so a search on several hosts
needs its run directory, data and image cache on a filesystem every host mounts (NFS, Lustre,
CephFS, ...), or its run directory at a cloud URI. A local path is fine while every node runs on
the driver's host (a single machine, or nodes started on it for testing).
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Iterable, Optional

__all__ = ["NETWORK_FILESYSTEMS", "filesystem_type", "cluster_hosts", "unshared_paths"]

NETWORK_FILESYSTEMS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "ceph", "glusterfs", "beegfs",
                       "wekafs", "fuse.sshfs", "fuse.s3fs", "fuse.gcsfuse", "fuse.juicefs", "fuse.ceph", "9p",
                       "virtiofs")


def filesystem_type(path: Path, mounts: str = "/proc/mounts") -> Optional[str]:
    """The type of the filesystem holding ``path`` (the longest matching mount point), if known."""
    try:
        lines = Path(mounts).read_text().splitlines()
    except OSError:
        return None
    target = str(Path(path).resolve())
    best, kind = "", None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


def cluster_hosts(nodes: Iterable[dict]) -> set[str]:
    """The distinct hosts of the alive nodes of ``ray.nodes()``."""
    return {n.get("NodeManagerHostname") or n.get("NodeManagerAddress") for n in nodes if n.get("Alive")}


def unshared_paths(paths: dict[str, str], nodes: Iterable[dict]) -> list[str]:
    """Descriptions of the local paths other hosts cannot see; empty when all is well."""
    hosts = cluster_hosts(nodes)
    if len(hosts) <= 1 and hosts <= {socket.gethostname(), *_local_addresses()}:
        return []
    problems = []
    for what, path in paths.items():
        if "://" in path:  # a cloud URI every node reaches
            continue
        kind = filesystem_type(Path(path))
        if kind is None or not (kind in NETWORK_FILESYSTEMS or kind.startswith("fuse.")):
            problems.append(f"{what} {path} ({kind or 'unknown'} filesystem)")
    return problems


def _local_addresses() -> set[str]:
    names = {"127.0.0.1", "localhost"}
    try:
        names.update(info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None))
    except OSError:
        pass
    names.add(os.environ.get("RAY_NODE_IP_ADDRESS", "127.0.0.1"))
    return names
