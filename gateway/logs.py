"""Structured logging: one ``key=value`` line per event, never message content."""

from __future__ import annotations

import logging
import sys
from typing import Any

_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@._-:/+[]<>,=")


def _render(value: Any) -> str:
    text = str(value)
    if text and all(ch in _SAFE for ch in text):
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
    logger.log(level, " ".join(parts))


def configure(level: str = "info") -> None:
    """Send gateway logs to stderr, one line each, with a timestamp."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger("gateway")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
