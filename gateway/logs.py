"""Structured logging: one ``key=value`` line (or one JSON object) per event, never message content."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Literal

from gateway.errors import GatewayError

LogFormat = Literal["text", "json"]

# Values made only of these characters are written unquoted.
_SAFE = re.compile(r"[a-zA-Z0-9@._\-:/+\[\]<>,=]+")


def describe_error(exc: BaseException) -> str:
    """An exception for the log: type and where it was raised; the text only for our own and OS errors.

    Messages of arbitrary exceptions can quote their input, and the input here is mail.
    """
    text = f"{type(exc).__name__}: {exc}" if isinstance(exc, GatewayError | OSError) else type(exc).__name__
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        last = frames[-1]
        text += f" at {Path(last.filename).name}:{last.lineno} in {last.name}"
    return text


def raised_at(exc: BaseException) -> str:
    """The frames ``exc`` passed through, outermost first, as ``file:line(function)`` on one line."""
    frames = traceback.extract_tb(exc.__traceback__)
    return " > ".join(f"{Path(frame.filename).name}:{frame.lineno}({frame.name})" for frame in frames)


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
    record = logger.makeRecord(
        logger.name,
        level,
        __file__,
        0,
        " ".join(parts),
        (),
        None,
        "log_event",
        {"event_fields": (event, fields)},
    )
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


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``event`` and its fields.

    For log collectors (journald, Loki, Elasticsearch) that index fields. Records made outside
    :func:`log_event` carry ``message`` instead of ``event``; an exception adds ``exception``.
    """

    def format(self, record: logging.LogRecord) -> str:
        moment = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        out: dict[str, Any] = {
            "time": f"{moment}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        carried = getattr(record, "event_fields", None)
        if carried is not None:
            event, fields = carried
            out["event"] = event
            for key, value in fields.items():
                if value is not None and key not in out:
                    out[key] = value if isinstance(value, bool | int | float) else str(value)
        else:
            out["message"] = record.getMessage()
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def configure(level: str = "info", log_format: LogFormat = "text") -> None:
    """Send gateway logs to stderr, one line each: ``time level logger event=...``, or JSON objects."""
    # Lines never show threads or processes: spare every record looking them up (logging's own
    # advice for lines made on a hot path).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else LineFormatter())
    root = logging.getLogger("gateway")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    # The PostgreSQL driver's pool warns when it cannot connect: in the same format as ours (a JSON
    # collector would drop a bare line), one line each (libpq's hints end in a second, indented one).
    driver_handler = logging.StreamHandler(sys.stderr)
    driver_handler.setFormatter(handler.formatter)
    driver_handler.addFilter(OneLine())  # on the handler: a logger's filters skip its children's records
    driver = logging.getLogger(DRIVER_LOGGER)
    driver.handlers[:] = [driver_handler]
    driver.setLevel(max(logging.WARNING, root.level))
    driver.propagate = False


DRIVER_LOGGER = "psycopg"
"""The logger the PostgreSQL driver and its pool write to (``psycopg``, ``psycopg.pool``)."""


class OneLine(logging.Filter):
    """Folds a record's message onto one line (another library's text may span several)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = " ".join(record.getMessage().split())
        record.args = ()
        return True
