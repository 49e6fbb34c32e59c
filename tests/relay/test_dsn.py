"""Delivery status notifications: RFC 3464 structure, plain words, headers only, never the body."""

from __future__ import annotations

from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest

from gateway.delivery.dsn import FailedRecipient, build_dsn, status_code
from gateway.header_section import original_headers

from .conftest import SENDER, envelope, message

NOW = 1_700_000_000.0


def build(failures: list[FailedRecipient], content: bytes | None = None, mail_from: str = SENDER) -> bytes:
    return build_dsn(
        queue_id="DSNID-D1",
        original=envelope(queue_id="ORIGINAL", mail_from=mail_from, received_at=NOW - 60),
        original_content=message(subject="Budget", body="The private body") if content is None else content,
        failures=failures,
        reporting_host="gw.example.org",
        created_at=NOW,
        retry_lifetime=5 * 86400,
    )


def parse(raw: bytes) -> EmailMessage:
    parsed = message_from_bytes(raw, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


REFUSED = FailedRecipient(
    "bob@example.org", "550 5.1.1 <bob@example.org>: unknown", "mx.example.org", False, NOW
)


def test_structure_follows_rfc_3464() -> None:
    raw = build([REFUSED])
    parsed = parse(raw)
    assert parsed.get_content_type() == "multipart/report"
    assert parsed.get_param("report-type") == "delivery-status"
    assert parsed["Auto-Submitted"] == "auto-replied"
    assert parsed["From"].addresses[0].addr_spec == "MAILER-DAEMON@gw.example.org"
    assert parsed["Message-ID"] == "<DSNID-D1@gw.example.org>"
    assert parsed["References"] == "<original-1@example.org>"
    human, report, headers = parsed.iter_parts()
    assert human.get_content_type() == "text/plain"
    assert report.get_content_type() == "message/delivery-status"
    assert headers.get_content_type() == "text/rfc822-headers"
    fields = report.as_bytes().decode()
    for line in (
        "Reporting-MTA: dns; gw.example.org",
        "Final-Recipient: rfc822; bob@example.org",
        "Action: failed",
        "Status: 5.1.1",
        "Remote-MTA: dns; mx.example.org",
        "Diagnostic-Code: smtp; 550 5.1.1 <bob@example.org>: unknown",
    ):
        assert line in fields
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    assert b"\n" not in raw.replace(b"\r\n", b"")


def test_the_original_body_is_never_included_but_its_headers_are() -> None:
    raw = build([REFUSED])
    assert b"The private body" not in raw
    assert b"Subject: Budget\r\n" in raw
    assert b"Message-ID: <original-1@example.org>\r\n" in raw


def test_plain_words_tell_the_sender_what_happened_and_what_to_do() -> None:
    human = parse(build([REFUSED])).get_body(("plain",))
    assert human is not None
    text = human.get_content()
    assert "could not be delivered to 1 recipient" in text
    assert "<bob@example.org>" in text and "mx.example.org refused it permanently" in text
    assert "What to do" in text and "ORIGINAL" in text


def test_an_expired_message_is_reported_with_the_last_problem() -> None:
    failure = FailedRecipient(
        "bob@example.org", "451 4.4.1 problem connecting to the upstream server", "", True, NOW
    )
    raw = build([failure])
    assert b"We kept trying for 5 days" in raw
    assert b"Status: 4.4.1" in raw and b"Action: failed" in raw
    assert b"Will-Retry-Until:" in raw


@pytest.mark.parametrize(
    ("reply", "expired", "expected"),
    [
        ("550 5.1.1 no such user", False, "5.1.1"),
        ("554 5.7.001 policy", False, "5.7.1"),
        ("550 mailbox unavailable", False, "5.0.0"),
        ("451 4.3.0 later", True, "4.3.0"),
        ("421 service not available", True, "4.4.7"),
        ("", True, "4.4.7"),
        ("garbage", False, "5.0.0"),
    ],
)
def test_status_codes(reply: str, expired: bool, expected: str) -> None:
    assert status_code(FailedRecipient("x@example.org", reply, "", expired)) == expected


def test_several_recipients_each_get_a_block() -> None:
    other = FailedRecipient("carol@example.org", "552 5.2.2 mailbox full", "mx.example.org", False, NOW)
    report = build([REFUSED, other]).decode()
    assert report.count("Final-Recipient:") == 2
    assert "could not be delivered to 2 recipients" in report


def test_international_addresses_make_a_global_report() -> None:
    failure = FailedRecipient("j\u00fcrgen@b\u00fccher.example", "550 5.1.1 unknown", "mx.example.org")
    raw = build([failure])
    assert b"Content-Type: message/global-delivery-status" in raw
    assert "Final-Recipient: utf-8; j\u00fcrgen@b\u00fccher.example".encode() in raw


def test_reply_text_cannot_inject_headers() -> None:
    nasty = FailedRecipient("bob@example.org", "550 5.1.1 x\r\nBcc: eve@example.org", "mx\r\nX-Evil: 1")
    raw = build([nasty])
    assert b"\r\nBcc:" not in raw and b"\r\nX-Evil" not in raw


def test_never_for_the_null_sender() -> None:
    with pytest.raises(ValueError, match="null sender"):
        build([REFUSED], mail_from="")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"A: 1\r\nB: 2\r\n\r\nbody\r\n", b"A: 1\r\nB: 2\r\n"),
        (b"A: 1\r\n folded\r\n\r\nbody", b"A: 1\r\n folded\r\n"),
        (b"A: 1\r\nB: 2", b"A: 1\r\nB: 2\r\n"),
        (b"\r\nbody only\r\n", b""),
    ],
)
def test_original_headers(content: bytes, expected: bytes) -> None:
    assert original_headers(content) == expected


def test_huge_header_sections_are_cut_at_a_line_end() -> None:
    content = b"".join(b"Received: from host%d.example.org\r\n" % n for n in range(5000)) + b"\r\nbody"
    headers = original_headers(content)
    assert len(headers) <= 64 * 1024 and headers.endswith(b"\r\n")
    assert content.startswith(headers)
