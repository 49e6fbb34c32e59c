"""The refusal notice: a "what to fix" mail besides the 550, naming places, never protected content;
never to the null sender or for an auto-submitted message; a "false positive" reply is audited."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from gateway.decision.policy_screener import PolicyScreener
from gateway.decision.refusal_notice import FALSE_POSITIVE_EVENT, automatic
from gateway.decision.screening import Accept, Submission
from gateway.replies import Reply
from gateway.settings import GatewaySettings, PolicySettings, ReviewSettings
from gateway.state.audit import audit_dir
from gateway.state.audit_reading import read_entries

POLICY = textwrap.dedent(
    """\
    organisation:
      conduct_address: conduct@example.org
      members:
        - name: Ada Quill
          addresses: [ada@example.org]
    rules:
      - rule: conduct-cc
        action: rewrite
      - rule: reporter-protection
        action: reject
    cases:
      - code: home shelf
        reporters:
          - id: quiet-heron
            names: [Jin Park]
            aliases: [JP]
            addresses: [jin.park@example.net]
            usernames: [jinpark]
    """
)
PROTECTED = ("Jin Park", "Jin", "Park", "JP", "jin.park@example.net", "jinpark")
ADA = "ada@example.org"
CONDUCT = "conduct@example.org"
OUTSIDER = "olive@example.net"


def submission(
    body: str, *, subject: str = "Minutes", mail_from: str = ADA, extra: str = "", queue_id: str = "Q1"
) -> Submission:
    content = (
        f"{extra}From: Ada Quill <{ADA}>\r\nTo: <{OUTSIDER}>\r\nCc: <{CONDUCT}>\r\nSubject: {subject}\r\n"
        f"Message-ID: <{queue_id}@example.org>\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    ).encode()
    return Submission(queue_id, mail_from, (OUTSIDER, CONDUCT), ADA, content)


def make_settings(tmp_path: Path, **review: object) -> GatewaySettings:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    return GatewaySettings(
        state_dir=tmp_path / "state", policy=PolicySettings(path=policy), review=ReviewSettings(**review)
    )


@pytest.fixture
def screener(tmp_path: Path) -> Iterator[PolicyScreener]:
    with PolicyScreener.from_settings(make_settings(tmp_path)) as opened:
        yield opened


def test_a_refusal_comes_with_a_notice_that_points_to_the_places(screener: PolicyScreener) -> None:
    refused = submission("JP told us about it.", subject="About Jin Park")
    reply = screener.screen(refused)
    assert isinstance(reply, Reply) and reply.code == 550
    disposition = screener.disposition(refused, reply)
    assert disposition.reply == reply and not disposition.accepted
    [notice] = disposition.outgoing
    assert (notice.mail_from, notice.rcpt_tos, notice.essential) == ("", (ADA,), False)
    text = notice.content.decode()
    assert "X-Conduct-Gateway-Notice: refused" in text
    assert "Q1@example.org" not in text  # not even the refused message's Message-ID (it can hold a name)
    assert "reporter-protection" in text and "header Subject" in text and "Reference: Q1" in text
    assert "false positive" in text
    for form in PROTECTED:
        assert form not in text, form
    assert "About" not in text  # the subject is not repeated either


@pytest.mark.parametrize(
    ("mail_from", "extra"),
    [
        pytest.param("", "", id="null-sender"),
        pytest.param(ADA, "Auto-Submitted: auto-generated\r\n", id="auto-submitted"),
        pytest.param(ADA, "Auto-Submitted: auto-replied; owner-email=x@example.org\r\n", id="auto-replied"),
    ],
)
def test_no_notice_answers_an_automatic_message(screener: PolicyScreener, mail_from: str, extra: str) -> None:
    refused = submission("JP told us.", mail_from=mail_from, extra=extra)
    reply = screener.screen(refused)
    assert isinstance(reply, Reply) and reply.code == 550
    assert screener.disposition(refused, reply).outgoing == ()


def test_auto_submitted_no_is_answered(screener: PolicyScreener) -> None:
    refused = submission("JP told us.", extra="Auto-Submitted: no\r\n")
    reply = screener.screen(refused)
    assert isinstance(reply, Reply) and len(screener.disposition(refused, reply).outgoing) == 1


def test_the_notice_can_be_switched_off(tmp_path: Path) -> None:
    with PolicyScreener.from_settings(make_settings(tmp_path, refusal_notices=False)) as screener:
        refused = submission("JP told us.")
        reply = screener.screen(refused)
        assert isinstance(reply, Reply) and screener.disposition(refused, reply).outgoing == ()


def test_a_false_positive_reply_is_audited_by_reference(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    with PolicyScreener.from_settings(settings) as screener:
        refused = submission("JP told us.", queue_id="0001AAAA")
        reply = screener.screen(refused)
        assert isinstance(reply, Reply)
        [notice] = screener.disposition(refused, reply).outgoing
        head = notice.content.split(b"\r\n\r\n", 1)[0].decode()
        notice_id = next(line for line in head.splitlines() if line.startswith("Message-ID:")).split(" ", 1)[
            1
        ]
        subject = next(line for line in head.splitlines() if line.startswith("Subject:")).split(" ", 1)[1]
        content = (
            f"From: Ada Quill <{ADA}>\r\nTo: <{CONDUCT}>\r\nSubject: Re: {subject}\r\n"
            f"Message-ID: <fp1@example.org>\r\nIn-Reply-To: {notice_id}\r\nReferences: {notice_id}\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\nFalse positive: JP is our own code.\r\n"
        ).encode()
        report = Submission("Q2", ADA, (CONDUCT,), ADA, content)
        accepted = screener.screen(report)
        assert isinstance(accepted, Accept)  # it reaches the committee like any mail to it
        plain = Submission("Q3", ADA, (CONDUCT,), ADA, content.replace(b"False positive", b"Thanks"))
        assert isinstance(screener.screen(plain), Accept)
        screener.flush_decisions()
    reports = [
        dict(e.fields)
        for e in read_entries(audit_dir(settings.state_dir))
        if e.fields["event"] == FALSE_POSITIVE_EVENT
    ]
    assert [(r["reference"], r["queue_id"]) for r in reports] == [("0001AAAA", "Q2")]


_KEYWORDS = st.sampled_from(["auto-generated", "auto-replied", "auto-notified", "AUTO-GENERATED", "x-other"])


@hypothesis_settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    keyword=_KEYWORDS,
    spacing=st.sampled_from(["", " ", "\t", "  "]),
    name=st.sampled_from(["Auto-Submitted", "auto-submitted", "AUTO-SUBMITTED"]),
)
def test_any_auto_submitted_keyword_but_no_is_automatic(keyword: str, spacing: str, name: str) -> None:
    content = f"From: a@example.org\r\n{name}:{spacing}{keyword}\r\n\r\nbody".encode()
    assert automatic("a@example.org", content)
    assert not automatic("a@example.org", f"From: a@example.org\r\n{name}:{spacing}no\r\n\r\nbody".encode())
    assert automatic("<>", b"From: a@example.org\r\n\r\nbody")
