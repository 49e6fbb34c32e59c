"""Tell systemd how the service is doing (``sd_notify``): ready, reloading, stopping, watchdog pings.

The protocol is one datagram of ``KEY=value`` lines to the Unix socket named by ``$NOTIFY_SOCKET``
(``@`` at its start stands for the abstract namespace). It is small and stable, and the Python
packages that speak it are either unmaintained (sdnotify, last release 2017) or need libsystemd's
headers to build (systemd-python, cysystemd), so the gateway speaks it itself. Outside systemd
(no ``$NOTIFY_SOCKET``) every call does nothing.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Mapping

NOTIFY_SOCKET = "NOTIFY_SOCKET"


def _address(environ: Mapping[str, str]) -> str | None:
    path = environ.get(NOTIFY_SOCKET, "")
    if not path or not (path.startswith("/") or path.startswith("@")):
        return None
    return "\0" + path[1:] if path.startswith("@") else path


def notify(*lines: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``lines`` (e.g. ``READY=1``) to systemd; whether a datagram was sent."""
    address = _address(os.environ if environ is None else environ)
    if address is None:
        return False
    payload = "\n".join(lines).encode("utf-8")
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(payload, address)
        return True
    return False


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """How often to ping the watchdog (half of ``WatchdogSec=``), or None when it is off or not ours."""
    env = os.environ if environ is None else environ
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec / 2_000_000
