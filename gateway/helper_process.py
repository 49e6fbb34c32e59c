"""How the gateway's helper processes (policy workers, the delivery process) begin; the cores they may use.

A process started by ``multiprocessing`` (spawn) shows the interpreter's bootstrap command line in
``ps`` and ``top`` (``python -c "from multiprocessing.spawn import spawn_main; ..."
--multiprocessing-fork``), which says nothing about what it is: each helper names itself after its
``multiprocessing`` name instead.
"""

from __future__ import annotations

import multiprocessing
import os
import signal

import setproctitle

from gateway.logs import configure
from gateway.settings import GatewaySettings


def begin_helper_process(settings: GatewaySettings) -> None:
    """Ignore Ctrl-C, log as the gateway does, and show as ``conduct-gateway policy worker 0`` (say)."""
    # Ctrl-C in a terminal reaches the whole process group: only the gateway decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure(settings.log_level, settings.logging.format)
    setproctitle.setproctitle(multiprocessing.current_process().name)


def available_cpus() -> int:
    """CPU cores this process may run on (its affinity where the system reports one)."""
    if hasattr(os, "sched_getaffinity"):  # Linux; not macOS
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
