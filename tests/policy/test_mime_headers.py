"""Header reading in the MIME decoder: malformed address fields and encoded-words that hide line breaks."""

from __future__ import annotations

import pytest

from gateway.policy.mime import parse_message
from gateway.policy.model import ParsedMessage

HEAD = "From: Ada Quill <ada@example.org>\r\nTo: someone@example.net\r\n"


def parsed(*headers: str, body: str = "Hello.\r\n") -> ParsedMessage:
    return parse_message((HEAD + "".join(f"{h}\r\n" for h in headers) + "\r\n" + body).encode("utf-8"))


@pytest.mark.parametrize(
    ("header", "where"),
    [
        pytest.param("Subject: =?utf-8?q?Hello=0ABcc:_x@example.net?=", "the Subject header", id="lf-q"),
        pytest.param(
            "Subject: =?utf-8?b?SGkNCkJjYzogeEBleGFtcGxlLm5ldA==?=", "the Subject header", id="crlf-b"
        ),
        pytest.param("Subject: =?utf-8?b?QQBC?=", "the Subject header", id="nul"),
        pytest.param("Subject: =?utf-8?q?a=E2=80=A8b?=", "the Subject header", id="line-separator"),
        pytest.param("Subject: =?utf-8?q?a?= =?utf-8?q?=0A?=", "the Subject header", id="second-word"),
        pytest.param("Cc: =?utf-8?q?Pat=0D?= <pat@example.com>", "the Cc header", id="display-name"),
        pytest.param("X-Note: =?utf-8?q?a=0Ab?=", "a header", id="any-header"),
    ],
)
def test_an_encoded_word_decoding_to_a_control_character_is_malformed(header: str, where: str) -> None:
    assert parsed(header).ambiguities == (
        f"an encoded-word in {where} decodes to a line break or another control character",
    )


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("Subject: =?utf-8?q?a=09b?=", id="tab"),
        pytest.param("Subject: =?iso-8859-1?q?=93quoted=94?=", id="windows-1252-labelled-latin-1"),
        pytest.param("Subject: =?utf-8?q?Caf=C3=A9?=", id="ordinary"),
    ],
)
def test_tabs_and_ordinary_text_in_encoded_words_are_read(header: str) -> None:
    assert parsed(header).ambiguities == ()


def test_a_control_character_in_an_attached_messages_header_is_found_too() -> None:
    inner = HEAD + "Subject: =?utf-8?q?x=0Ay?=\r\n\r\ninner\r\n"
    message = parsed(
        "MIME-Version: 1.0",
        "Content-Type: message/rfc822",
        body=inner,
    )
    assert message.ambiguities == (
        "an encoded-word in the Subject header of the message in part 1 decodes to a line break or "
        "another control character",
    )


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        pytest.param("Cc: John Doe <jdoe@", 'the Cc header is malformed: an address is not closed with ">"'),
        pytest.param("Cc: " + "(" * 5000, "the Cc header is malformed: comments in parentheses are nested"),
        pytest.param('Bcc: "unclosed', "the Bcc header is malformed: a quoted name is not closed"),
    ],
)
def test_an_address_header_that_cannot_be_read_is_malformed(header: str, reason: str) -> None:
    message = parsed(header)
    assert len(message.ambiguities) == 1 and message.ambiguities[0].startswith(reason)
