"""The review desk on a real screener: a held message, reviewers' replies, and the screener that holds it."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.decision.policy_screener import PolicyScreener
from gateway.mail.disposition import Disposition
from gateway.mail.messages import Submission
from gateway.review.desk import ReviewDesk
from gateway.settings import GatewaySettings, PolicySettings, ReviewSettings, ServerSettings

HELD = (
    b"From: Ada Quill <ada@example.org>\r\nTo: <olive@example.net>\r\nSubject: The incident\r\n"
    b"Message-ID: <held-1@example.org>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n"
    b"\r\nJin Park reported the incident.\r\n"
)
# A reviewer's client quotes the request under the reply; a quoted command is never read.
QUOTED_REQUEST = "\r\n\r\nOn Mon, the gateway wrote:\r\n> approve"

OpenScreener = Callable[..., PolicyScreener]


@pytest.fixture
def open_screener(tmp_path: Path) -> Iterator[OpenScreener]:
    """Opens a screener on a policy's YAML text (its review desk with ``review``); closed after the test."""
    with contextlib.ExitStack() as opened:

        def open_(policy_text: str, review: ReviewSettings | None = None) -> PolicyScreener:
            policy = tmp_path / "policy.yaml"
            policy.write_text(policy_text, encoding="utf-8")
            settings = GatewaySettings(
                state_dir=tmp_path / "state",
                policy=PolicySettings(path=policy),
                server=ServerSettings(hostname="gateway.example.test"),
                review=review or ReviewSettings(),
            )
            return opened.enter_context(PolicyScreener.from_settings(settings))

        yield open_


def desk(screener: PolicyScreener) -> ReviewDesk:
    assert screener.review is not None
    return screener.review


def held(queue_id: str = "Q1") -> Submission:
    """Ada's message naming a protected reporter: the policies here hold it."""
    return Submission(queue_id, "ada@example.org", ("olive@example.net",), "ada@example.org", HELD)


def answer(
    to: str, text: str, queue_id: str = "R1", *, member: str = "ben", quoted: bool = False
) -> Submission:
    """``member`` replies ``text`` to the review address ``to`` (above the quoted request with ``quoted``)."""
    address = f"{member}@example.org"
    body = f"{text}{QUOTED_REQUEST}" if quoted else text
    content = (
        f"From: <{address}>\r\nTo: <{to}>\r\nSubject: Re: review\r\nMessage-ID: <{queue_id}@x>\r\n"
        f"Content-Type: text/plain\r\n\r\n{body}\r\n"
    ).encode()
    return Submission(queue_id, address, (to,), address, content)


def reply_to(disposition: Disposition, member: str = "ben") -> str:
    """The review address in the request ``member`` got with ``disposition``."""
    [request] = [m for m in disposition.outgoing if m.rcpt_tos == (f"{member}@example.org",)]
    match = re.search(rb"^Reply-To: <([^>]+)>", request.content, re.MULTILINE)
    assert match is not None
    return match.group(1).decode()
