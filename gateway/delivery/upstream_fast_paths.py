"""Fast paths for aiosmtplib's DATA preparation, for messages that need no change.

``aiosmtplib`` prepares every message for DATA with two regular-expression passes over all of it:
one converts lone CR and LF to CRLF, one doubles a leading dot on each line. Each pass rebuilds the
message even when nothing changes; together they cost about 100 µs per 8 KB message, a tenth of what
the gateway spends relaying one. Spooled messages are already CRLF-only (the DATA reader and the
rewriter guarantee it) and seldom have a line starting with a dot, so both passes are almost always
no-ops.

``install()`` wraps aiosmtplib's two module-level helpers, which ``execute_data_command`` looks up
at each call, with a check that answers those no-op cases with the message itself (a few counts and
one substring search, in C) and hands every other message to aiosmtplib's own code. The bytes sent
are identical in every case (``tests/relay/test_upstream_fast_paths.py`` compares them on arbitrary
input). If a later aiosmtplib no longer has these helpers, nothing is wrapped and nothing changes
but the speed; a test says so.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

import aiosmtplib.protocol as _protocol

_NORMALIZE_NAME: Final = "normalize_message_line_endings"
_PERIOD_NAME: Final = "PERIOD_REGEX"


def crlf_only(message: bytes) -> bool:
    """Whether every CR and every LF in ``message`` belongs to a CRLF pair."""
    pairs = message.count(b"\r\n")
    return message.count(b"\r") == pairs and message.count(b"\n") == pairs


def fast_line_endings(original: Callable[[bytes], bytes]) -> Callable[[bytes], bytes]:
    """``original`` (aiosmtplib's line-ending normaliser), skipped for a CRLF-only message."""

    def normalize_message_line_endings(message: bytes) -> bytes:
        if crlf_only(message):
            return message if message.endswith(b"\r\n") else message + b"\r\n"
        return original(message)

    return normalize_message_line_endings


class FastPeriodQuoting:
    """Stands in for aiosmtplib's ``(?m)^\\.`` pattern: ``sub`` returns a message with no line
    starting with a dot as it is, and gives any other to the pattern itself."""

    def __init__(self, pattern: re.Pattern[bytes]) -> None:
        self.pattern = pattern

    def sub(self, repl: bytes, string: bytes, count: int = 0) -> bytes:
        if not string.startswith(b".") and b"\n." not in string:
            return string  # `^` in multiline mode matches only at the start and after LF
        return self.pattern.sub(repl, string, count)

    def __getattr__(self, name: str) -> object:
        return getattr(self.pattern, name)


def install() -> bool:
    """Wrap aiosmtplib's DATA helpers (once; later calls do nothing). False if they are gone."""
    normalize = getattr(_protocol, _NORMALIZE_NAME, None)
    period = getattr(_protocol, _PERIOD_NAME, None)
    if not callable(normalize) or not isinstance(period, re.Pattern | FastPeriodQuoting):
        return False
    if isinstance(period, re.Pattern):
        if period.pattern != rb"(?m)^\.":
            return False  # a different quoting rule than the one the fast path assumes
        setattr(_protocol, _PERIOD_NAME, FastPeriodQuoting(period))
    if not hasattr(normalize, "__wrapped_fast__"):
        wrapped = fast_line_endings(normalize)
        wrapped.__wrapped_fast__ = normalize  # type: ignore[attr-defined]
        setattr(_protocol, _NORMALIZE_NAME, wrapped)
    return True


def installed() -> bool:
    """Whether both fast paths are in place."""
    return isinstance(getattr(_protocol, _PERIOD_NAME, None), FastPeriodQuoting) and hasattr(
        getattr(_protocol, _NORMALIZE_NAME, None), "__wrapped_fast__"
    )
