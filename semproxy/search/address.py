"""``--address``: the running Ray cluster a search attaches to, checked before any work.

Ray answers a malformed address with a traceback, and a ``HOST:PORT`` where nothing listens with
minutes of retries (``ray.init`` keeps trying to reach the cluster's GCS). So the address is parsed
here, and a ``HOST:PORT`` gets one TCP connection of a few seconds, before data is read or Ray starts.
"""
from __future__ import annotations

import re
import socket
from typing import Optional

from ..errors import SearchError

__all__ = ["check_address", "PROBE_SECONDS"]

#: How long a HOST:PORT may take to accept a connection.
PROBE_SECONDS = 5.0
_HOST_PORT = re.compile(r"^(?:ray://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")
EXPECTED = "'auto', HOST:PORT of a running Ray head (its GCS port, 6379 by default) or ray://HOST:PORT"


def check_address(address: Optional[str], timeout: float = PROBE_SECONDS) -> None:
    """Refuse an address Ray could not use (SearchError naming ``--address``); None (start a local
    cluster) and ``auto`` (Ray looks for one on this machine) pass."""
    if address is None or address == "auto":
        return
    named = _HOST_PORT.match(address)
    if not named or not 0 < int(named.group(2)) < 65536:
        raise SearchError(f"--address {address!r}: expected {EXPECTED}")
    host, port = named.group(1).strip("[]"), int(named.group(2))
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as error:
        why = "timed out" if isinstance(error, TimeoutError) else error.strerror or type(error).__name__
        raise SearchError(f"--address {address}: nothing answers at {host}:{port} ({why}); start the cluster "
                          f"(ray start --head) or give its address") from None
