"""Gateway-written mail: headers of an auto-reply, committee-only recipients, per-sender rate limit."""

from __future__ import annotations

import email
import email.policy

import pytest

from gateway.mail.notices import (
    Letter,
    LimitDecision,
    NoticeFinding,
    NoticeKind,
    NoticeLimiter,
    NoticeRefused,
    Notices,
    warnings_letter,
)

COMMITTEE = ("ada@example.org", "ben@example.org")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def notices(limiter: NoticeLimiter | None = None) -> Notices:
    return Notices(
        conduct_address="conduct@example.org",
        committee=COMMITTEE,
        hostname="gw.example.test",
        limiter=limiter,
    )


def letter(kind: NoticeKind = NoticeKind.HELD, to: str = "ada@example.org") -> Letter:
    return Letter(
        kind, to, "Held for review: Über den Vorfall", "Your message is held.", in_reply_to="<m1@example.org>"
    )


def test_a_notice_is_an_auto_reply_from_the_conduct_address_with_a_null_sender() -> None:
    outgoing = notices().outgoing(letter())
    assert outgoing is not None
    assert outgoing.mail_from == "" and outgoing.rcpt_tos == ("ada@example.org",)
    assert not outgoing.essential
    message = email.message_from_bytes(outgoing.content, policy=email.policy.default)
    assert message["Auto-Submitted"] == "auto-replied"
    assert message["In-Reply-To"] == "<m1@example.org>" and message["References"] == "<m1@example.org>"
    assert message["From"].addresses[0].addr_spec == "conduct@example.org"
    assert message["Subject"] == "Held for review: Über den Vorfall"
    assert message["X-Conduct-Gateway-Notice"] == "held"
    assert b"\r\n" in outgoing.content and b"\n" not in outgoing.content.replace(b"\r\n", b"")
    head = outgoing.content.split(b"\r\n\r\n", 1)[0]
    assert head.isascii()


@pytest.mark.parametrize("to", ["olive@example.net", "ADA@example.org.evil.test", ""])
def test_never_outside_the_committee(to: str) -> None:
    with pytest.raises(NoticeRefused):
        notices().outgoing(letter(to=to))


def test_the_conduct_address_and_any_case_of_a_member_address_are_inside() -> None:
    assert notices().outgoing(letter(to="Ben@Example.org")) is not None
    assert notices().outgoing(letter(to="conduct@example.org")) is not None


def test_attached_message_is_carried_byte_for_byte() -> None:
    original = b"From: a@example.org\r\nSubject: x\r\n\r\nbody \xc3\xa4\r\n"
    outgoing = notices().outgoing(
        Letter(NoticeKind.REJECTED, "ada@example.org", "Not sent", "Rejected.", attachment=original)
    )
    assert outgoing is not None
    assert original in outgoing.content
    message = email.message_from_bytes(outgoing.content, policy=email.policy.default)
    assert [p.get_content_type() for p in message.walk()] == [
        "multipart/mixed",
        "text/plain",
        "message/rfc822",
        "text/plain",
    ]


def test_headers_only_attachment_leaves_the_body_out() -> None:
    original = b"From: a@example.org\r\nSubject: x\r\n\r\nsecret body\r\n"
    outgoing = notices().outgoing(
        Letter(
            NoticeKind.EXPIRED,
            "ada@example.org",
            "Expired",
            "x",
            attachment=original,
            attachment_headers_only=True,
        )
    )
    assert (
        outgoing is not None and b"secret body" not in outgoing.content and b"Subject: x" in outgoing.content
    )


def test_rate_limit_collapses_then_drops_then_recovers() -> None:
    clock = Clock()
    limiter = NoticeLimiter(3, clock)
    built = notices(limiter)
    kinds = []
    for _ in range(6):
        outgoing = built.outgoing(letter())
        kinds.append(
            None if outgoing is None else outgoing.content.split(b"X-Conduct-Gateway-Notice: ")[1][:10]
        )
    assert kinds[:3] == [b"held\r\nMIME"] * 3
    assert kinds[3] == b"suppressed"
    assert kinds[4:] == [None, None]
    # Decision outcomes are never suppressed: they were promised.
    assert built.outgoing(letter(NoticeKind.APPROVED)) is not None
    # Another sender has a budget of their own.
    assert built.outgoing(letter(to="ben@example.org")) is not None
    clock.now += 3601
    assert limiter.check("ada@example.org") is LimitDecision.SEND


def test_warnings_letter_lists_every_warning_once() -> None:
    findings = [
        NoticeFinding(
            "communication", "MINIMISING_LANGUAGE", "part 1", "phrase", "Say what happened.", "warn"
        ),
        NoticeFinding(
            "communication", "VAGUE_REQUEST", "part 1", "phrase", "Ask for something concrete.", "warn"
        ),
    ]
    built = warnings_letter(
        to="ada@example.org", reference="Q7", subject="Notes", message_id="<m7@x>", findings=findings
    )
    assert built.kind is NoticeKind.WARNINGS and built.in_reply_to == "<m7@x>"
    assert (
        built.text.count("MINIMISING_LANGUAGE") == 1 and "VAGUE_REQUEST" in built.text and "Q7" in built.text
    )
