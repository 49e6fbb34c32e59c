"""The content the upstream client sends after DATA: the very bytes aiosmtplib's preparation sent before."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.delivery.smtp_client import crlf_only, prepare_content

# The preparation the upstream transport used before it owned its protocol (aiosmtplib 5.1's
# ``normalize_message_line_endings`` and ``PERIOD_REGEX``), as the reference: no byte may differ.
LINE_ENDINGS = re.compile(rb"(?:\r\n|\n|\r(?!\n))")
PERIOD = re.compile(rb"(?m)^\.")


def reference(message: bytes) -> bytes:
    message = LINE_ENDINGS.sub(b"\r\n", message)
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    return PERIOD.sub(b"..", message)


# Messages made of the characters both passes care about, and a few they do not.
messages = st.lists(
    st.sampled_from([b"\r\n", b"\r", b"\n", b".", b"..", b"a", b" ", b"\xc3\xa9", b"\r\n.", b"\n."]),
    max_size=40,
).map(b"".join)


@settings(max_examples=1000)
@given(messages)
def test_the_data_sent_is_what_aiosmtplib_sent(message: bytes) -> None:
    assert prepare_content(message) == reference(message)


def test_the_reference_is_aiosmtplibs_own_preparation() -> None:
    import aiosmtplib.protocol as protocol  # a test dependency: the client the load tests use

    assert protocol.LINE_ENDINGS_REGEX.pattern == LINE_ENDINGS.pattern
    assert protocol.PERIOD_REGEX.pattern == PERIOD.pattern
    sample = b".a\nb\r.c\r\n..d"
    prepared = protocol.PERIOD_REGEX.sub(b"..", protocol.normalize_message_line_endings(sample))
    assert prepared == reference(sample)


def test_a_message_that_needs_no_change_is_not_copied() -> None:
    message = b"Subject: x\r\n\r\nplain text\r\nno dots at line starts.\r\n"
    assert prepare_content(message) is message


def test_messages_that_need_changes_are_changed() -> None:
    assert prepare_content(b"a\nb\rc") == b"a\r\nb\r\nc\r\n"
    assert prepare_content(b".a\r\nb\r\n.c\r\n") == b"..a\r\nb\r\n..c\r\n"
    assert prepare_content(b"no final line end") == b"no final line end\r\n"


def test_crlf_only() -> None:
    assert crlf_only(b"") and crlf_only(b"a\r\nb\r\n")
    assert not crlf_only(b"a\nb") and not crlf_only(b"a\rb") and not crlf_only(b"a\n\r")
