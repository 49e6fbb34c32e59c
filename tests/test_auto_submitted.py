"""RFC 3834: the gateway never answers the null sender or an auto-submitted message with a notice."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.decision.policy_screener import PolicyScreener
from gateway.decision.screening import Accept, Ruling, Submission
from gateway.mail.auto_submitted import answerable, auto_submitted
from gateway.mail.notices import Letter, NoticeKind, NoticeRefused, Notices
from gateway.settings import GatewaySettings, PolicySettings

MEMBER = "ada@example.org"


def mail(*fields: str) -> bytes:
    head = [*fields, f"From: <{MEMBER}>", "To: <olive@example.net>", "Subject: minutes"]
    return ("\r\n".join(head) + "\r\n\r\nHello\r\n").encode()


def notices() -> Notices:
    return Notices(conduct_address="conduct@example.org", committee=(MEMBER,), hostname="gw.example.test")


@pytest.mark.parametrize(
    ("fields", "automatic"),
    [
        pytest.param((), False, id="no-field"),
        pytest.param(("Auto-Submitted: no",), False, id="no"),
        pytest.param(("Auto-Submitted: No (sent by a person)",), False, id="no-with-comment"),
        pytest.param(("Auto-Submitted: auto-replied",), True, id="auto-replied"),
        pytest.param(("Auto-Submitted: auto-generated",), True, id="auto-generated"),
        pytest.param(('Auto-Submitted: auto-replied; owner-email="ada@example.org"',), True, id="params"),
        pytest.param(("auto-submitted:   AUTO-NOTIFIED",), True, id="any-case"),
        pytest.param(("Auto-Submitted:\r\n auto-replied",), True, id="folded"),
        pytest.param(("Auto-Submitted: (what?)",), True, id="unreadable-counts-as-automatic"),
    ],
)
def test_auto_submitted_is_any_keyword_but_no(fields: tuple[str, ...], automatic: bool) -> None:
    assert auto_submitted(mail(*fields)) is automatic
    assert answerable(MEMBER, mail(*fields)) is not automatic


def test_a_field_in_the_body_does_not_count() -> None:
    assert not auto_submitted(mail() + b"Auto-Submitted: auto-replied\r\n")


@pytest.mark.parametrize("sender", ["", "<>", " <> "])
def test_the_null_sender_is_never_answered(sender: str) -> None:
    assert not answerable(sender, mail())


@given(st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,20}", fullmatch=True))
def test_every_keyword_other_than_no_is_automatic(keyword: str) -> None:
    assert auto_submitted(mail(f"Auto-Submitted: {keyword}")) is (keyword.lower() != "no")


@pytest.mark.parametrize("kind", [NoticeKind.HELD, NoticeKind.WARNINGS, NoticeKind.REJECTED])
def test_a_notice_answering_an_automatic_message_is_not_built(kind: NoticeKind) -> None:
    automatic = Letter(kind, MEMBER, "About it", "Text.", answering=mail("Auto-Submitted: auto-replied"))
    assert notices().outgoing(automatic) is None
    assert notices().outgoing(Letter(kind, MEMBER, "About it", "Text.", answering=mail())) is not None


def test_a_rejection_attaching_an_automatic_message_is_not_sent() -> None:
    original = mail("Auto-Submitted: auto-generated")
    letter = Letter(NoticeKind.EXPIRED, MEMBER, "Expired", "Text.", attachment=original)
    assert notices().outgoing(letter) is None


def test_a_review_request_for_an_automatic_message_still_reaches_the_reviewer() -> None:
    original = mail("Auto-Submitted: auto-replied")
    letter = Letter(NoticeKind.REVIEW_REQUEST, MEMBER, "Review", "Text.", attachment=original)
    assert notices().outgoing(letter) is not None


def test_a_notice_to_the_null_sender_is_refused() -> None:
    with pytest.raises(NoticeRefused):
        notices().outgoing(Letter(NoticeKind.HELD, "", "Held", "Text.", answering=mail()))


# -- through the screener: the warnings notice and the held notice ---------------------------------

WARN_POLICY = """\
organisation:
  conduct_address: conduct@example.org
  members:
    - name: Ada Quill
      addresses: [ada@example.org]
    - name: Ben Ink
      addresses: [ben@example.org]
rules:
  - rule: communication
    action: warn
    actions: {VAGUE_REQUEST: hold}
"""


def screened(tmp_path: Path, body: str, *fields: str) -> Accept:
    path = tmp_path / "policy.yaml"
    path.write_text(WARN_POLICY, encoding="utf-8")
    settings = GatewaySettings(state_dir=tmp_path / "state", policy=PolicySettings(path=path, workers=0))
    head = [
        *fields,
        f"From: <{MEMBER}>",
        "To: <olive@example.net>, <conduct@example.org>",
        "Subject: minutes",
    ]
    content = ("\r\n".join(head) + f"\r\n\r\n{body}\r\n").encode()
    sub = Submission("Q1", MEMBER, ("olive@example.net", "conduct@example.org"), MEMBER, content)
    with PolicyScreener.from_settings(settings) as screener:
        result = screener.screen(sub)
    assert isinstance(result, Accept)
    return result


def kinds(accept: Accept) -> list[str]:
    return [
        m.content.split(b"X-Conduct-Gateway-Notice: ", 1)[1].split(b"\r\n", 1)[0].decode()
        for m in accept.extra
    ]


@pytest.mark.parametrize("automatic", [False, True])
def test_a_warning_notice_never_answers_an_auto_reply(tmp_path: Path, automatic: bool) -> None:
    fields = ("Auto-Submitted: auto-replied",) if automatic else ()
    accept = screened(tmp_path, "It was just a misunderstanding.", *fields)
    assert kinds(accept) == ([] if automatic else ["warnings"])


@pytest.mark.parametrize("automatic", [False, True])
def test_a_held_auto_reply_is_reviewed_but_its_sender_gets_no_notice(tmp_path: Path, automatic: bool) -> None:
    fields = ("Auto-Submitted: auto-generated",) if automatic else ()
    accept = screened(tmp_path, "Please be better.", *fields)
    assert accept.verdict is Ruling.HOLD
    assert sorted(kinds(accept)) == (["review-request"] if automatic else ["held", "review-request"])
