"""What operators see in ``ps`` and ``top`` for the gateway's helper processes.

A process started by ``multiprocessing`` (spawn) shows the interpreter's bootstrap command line
(``python -c "from multiprocessing.spawn import spawn_main; ..." --multiprocessing-fork``), which says
nothing about what it is. Each helper names itself after its ``multiprocessing`` name instead.
"""

from __future__ import annotations

import multiprocessing

import setproctitle


def name_this_process() -> None:
    """Show this process as its multiprocessing name (``conduct-gateway policy worker 0``)."""
    setproctitle.setproctitle(multiprocessing.current_process().name)
