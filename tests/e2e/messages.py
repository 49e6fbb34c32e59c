"""Messages the end-to-end tests submit, and the check that one arrived byte for byte."""

from __future__ import annotations

import uuid

from tests.e2e.postfix import DeliveredMessage


def token() -> str:
    """A marker no other message carries (also used to prove it never reaches a log)."""
    return f"tok{uuid.uuid4().hex[:16]}"


def unique_address(label: str, domain: str = "example.test") -> str:
    """A recipient no other test uses: the shared Maildir tells messages apart by Delivered-To."""
    return f"{label}-{uuid.uuid4().hex[:10]}@{domain}"


def tricky_message(sender: str, recipient: str, marker: str, subject: str | None = None) -> bytes:
    """A message whose bytes a careless relay would change: dots, 8-bit UTF-8, folding, long lines."""
    lines = [
        f"From: Maya Member <{sender}>",
        f"To: <{recipient}>",
        f"Subject: {subject or f'end-to-end {marker}'}",
        f"Message-ID: <{marker}@example.org>",
        "Date: Mon, 02 Dec 2024 10:00:00 +0000",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "X-Folded-Header: a header folded",
        "\tonto a second line",
        "",
        f"Body {marker}.",
        ".a line starting with a dot (dot-stuffed on the wire)",
        "..two dots",
        ".",
        "From the start of a line: no mbox escaping in a Maildir",
        "trailing spaces stay   ",
        "Grüße aus Köln — raw 8-bit UTF-8",
        "x" * 900,
        "",
        "last line",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


def assert_arrived_unchanged(delivered: DeliveredMessage, sent: bytes) -> None:
    """The body arrived byte for byte and every header line sent is there, in order.

    The Maildir holds LF line ends, and Postfix (and the gateway) may only *prepend* trace headers
    (Return-Path, Delivered-To, Received, ...).
    """
    sent_lf = sent.replace(b"\r\n", b"\n")
    sent_headers, _, sent_body = sent_lf.partition(b"\n\n")
    assert delivered.body == sent_body, "the body changed between the client and Postfix"
    assert delivered.header_block.endswith(sent_headers + b"\n"), (
        "the headers sent are not the tail of the delivered header block:\n"
        + delivered.header_block.decode(errors="replace")
    )
