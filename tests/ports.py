"""Loopback ports for the servers the tests start, stop and start again (Postfix, PostgreSQL)."""

from __future__ import annotations

import random
import socket
from pathlib import Path

EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def restartable_port(host: str = "127.0.0.1") -> int:
    """A free port below the kernel's ephemeral range.

    A port the kernel handed out (bind to 0) is an ephemeral one: while its server is stopped, any
    outgoing connection (a gateway's pool to PostgreSQL, say) may take it as its local port and keep
    it, and the restart then fails with "Address already in use". Below the range no outgoing
    connection is ever given it.
    """
    try:
        low = int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    if low <= 2048:  # an unusual range: no room below it
        with socket.socket() as probe:
            probe.bind((host, 0))
            return int(probe.getsockname()[1])
    chooser = random.SystemRandom()
    for _ in range(100):
        port = chooser.randrange(max(1024, low // 2), low)
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port on {host} below {low}")
