"""Structured logging: one ``key=value`` line per event, never message content."""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any

# Values made only of these characters are written unquoted.
_SAFE = re.compile(r"[a-zA-Z0-9@._\-:/+\[\]<>,=]+")


def _render(value: Any) -> str:
    text = str(value)
    if _SAFE.fullmatch(text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log ``event`` with ``fields`` as one line. Callers pass metadata only: ids, counts, codes.

    Never pass bodies, subjects or matched identities; the audit and privacy rules forbid them.
    """
    if not logger.isEnabledFor(level):
        return
    parts = [f"event={event}"]
    parts.extend(f"{key}={_render(value)}" for key, value in fields.items() if value is not None)
    # Logger.log would look up the calling frame (always this function: nothing worth recording) on
    # every event; making the record here skips that cost on the event loop.
    record = logger.makeRecord(logger.name, level, __file__, 0, " ".join(parts), (), None, "log_event")
    logger.handle(record)


class LineFormatter(logging.Formatter):
    """``time level logger message``; the time text is made once per second, not once per line."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")
        self._second = -1
        self._second_text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._second_text = time.strftime(self.default_time_format, self.converter(second))
            self._second = second
        return f"{self._second_text},{int(record.msecs):03d}"  # as logging.Formatter.default_msec_format


def configure(level: str = "info") -> None:
    """Send gateway logs to stderr, one line each, with a timestamp."""
    # Lines never show threads or processes: spare every record looking them up (logging's own
    # advice for lines made on a hot path).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LineFormatter())
    root = logging.getLogger("gateway")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
