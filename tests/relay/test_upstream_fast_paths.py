"""aiosmtplib's DATA preparation with the gateway's fast paths sends exactly the bytes it did before."""

from __future__ import annotations

import re

import aiosmtplib.protocol as protocol
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.delivery import upstream_fast_paths
from gateway.delivery.upstream_fast_paths import FastPeriodQuoting, crlf_only, fast_line_endings

upstream_fast_paths.install()
ORIGINAL_NORMALIZE = protocol.normalize_message_line_endings.__wrapped_fast__  # type: ignore[attr-defined]
ORIGINAL_PERIOD: re.Pattern[bytes] = protocol.PERIOD_REGEX.pattern  # type: ignore[assignment]

# Messages made of the characters both passes care about, and a few they do not.
messages = st.lists(
    st.sampled_from([b"\r\n", b"\r", b"\n", b".", b"..", b"a", b" ", b"\xc3\xa9", b"\r\n.", b"\n."]),
    max_size=40,
).map(b"".join)


def prepared(message: bytes, normalize: object, period: object) -> bytes:
    """What ``execute_data_command`` writes after DATA, given its two helpers."""
    normalized = normalize(message)  # type: ignore[operator]
    return period.sub(b"..", normalized) + b".\r\n"  # type: ignore[attr-defined,no-any-return]


def test_both_fast_paths_are_installed_in_this_aiosmtplib() -> None:
    # If an upgrade renames the helpers, the gateway still works but loses the speed-up: say so here.
    assert upstream_fast_paths.installed()
    assert ORIGINAL_PERIOD.pattern == rb"(?m)^\."


def test_installing_twice_wraps_once() -> None:
    before = (protocol.normalize_message_line_endings, protocol.PERIOD_REGEX)
    assert upstream_fast_paths.install()
    assert (protocol.normalize_message_line_endings, protocol.PERIOD_REGEX) == before
    assert ORIGINAL_NORMALIZE.__name__ == "normalize_message_line_endings"
    assert not hasattr(ORIGINAL_NORMALIZE, "__wrapped_fast__")


@settings(max_examples=500)
@given(messages)
def test_line_endings_are_normalised_exactly_as_aiosmtplib_does(message: bytes) -> None:
    assert fast_line_endings(ORIGINAL_NORMALIZE)(message) == ORIGINAL_NORMALIZE(message)


@settings(max_examples=500)
@given(messages)
def test_leading_dots_are_doubled_exactly_as_aiosmtplib_does(message: bytes) -> None:
    assert FastPeriodQuoting(ORIGINAL_PERIOD).sub(b"..", message) == ORIGINAL_PERIOD.sub(b"..", message)


@settings(max_examples=500)
@given(messages)
def test_the_data_sent_is_unchanged(message: bytes) -> None:
    fast = prepared(message, protocol.normalize_message_line_endings, protocol.PERIOD_REGEX)
    assert fast == prepared(message, ORIGINAL_NORMALIZE, ORIGINAL_PERIOD)


def test_a_message_that_needs_no_change_is_not_copied() -> None:
    message = b"Subject: x\r\n\r\nplain text\r\nno dots at line starts.\r\n"
    assert protocol.normalize_message_line_endings(message) is message
    assert protocol.PERIOD_REGEX.sub(b"..", message) is message


def test_messages_that_need_changes_are_changed() -> None:
    assert protocol.normalize_message_line_endings(b"a\nb\rc") == b"a\r\nb\r\nc\r\n"
    assert protocol.PERIOD_REGEX.sub(b"..", b".a\r\nb\r\n.c\r\n") == b"..a\r\nb\r\n..c\r\n"


def test_crlf_only() -> None:
    assert crlf_only(b"") and crlf_only(b"a\r\nb\r\n")
    assert not crlf_only(b"a\nb") and not crlf_only(b"a\rb") and not crlf_only(b"a\n\r")
