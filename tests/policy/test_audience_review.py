"""audience-review: mail to the reviewed roles is reported, per role and case, naming the recipients."""

from __future__ import annotations

import pytest

from gateway.policy.audiences import Audiences, Membership, Role
from gateway.policy.matcher import IdentityMatcher
from gateway.policy.mime import parse_message
from gateway.policy.model import Envelope, RuleContext
from gateway.policy.rules import audience_review
from gateway.policy.rules.audience_review import Params
from tests.policy.builders import plain

CONDUCT = "conduct@example.org"
ADA = "ada@example.org"
MOD = "mods@forum.example.net"
ORGANISER = "team@events.example.com"
REPORTED = "pat@example.com"
REPORTER = "robin@mail.example.net"
OTHER = "someone@example.net"

CONTEXT = RuleContext(
    conduct_address=CONDUCT,
    committee=frozenset({ADA}),
    member_names=((ADA, "Ada Quill"),),
    internal_domains=frozenset(),
    finder=IdentityMatcher.build(()),
    consents=frozenset(),
    audiences=Audiences.build(
        conduct_address=CONDUCT,
        committee=[ADA],
        addresses=[
            (REPORTED, Membership(Role.REPORTED, "home shelf")),
            (REPORTER, Membership(Role.REPORTER, "home shelf")),
            ("root@infra.example.net", Membership(Role.ADMIN)),
        ],
        domains=[
            ("forum.example.net", Membership(Role.MODERATOR)),
            ("events.example.com", Membership(Role.ORGANISER)),
        ],
    ),
)
MESSAGE = parse_message(plain("Hello."))


def findings(*rcpts: str, params: Params | None = None) -> list[tuple[str, str, tuple[str, ...], str | None]]:
    envelope = Envelope(mail_from=ADA, rcpt_tos=rcpts, authenticated_as=ADA)
    return [
        (f.code, f.kind, f.recipients, f.case)
        for f in audience_review.check(MESSAGE, envelope, CONTEXT, params or Params())
    ]


@pytest.mark.parametrize(
    ("rcpts", "expected"),
    [
        pytest.param((ADA, CONDUCT), [], id="committee-only"),
        pytest.param((OTHER, CONDUCT), [], id="other"),
        pytest.param((REPORTER, CONDUCT), [], id="reporter-not-reviewed-by-default"),
        pytest.param(
            (MOD, CONDUCT), [("NEEDS_SECOND_REVIEW", "moderator", (MOD,), None)], id="moderator-domain"
        ),
        pytest.param(
            (REPORTED.upper(), CONDUCT),
            [("NEEDS_SECOND_REVIEW", "reported", (REPORTED.upper(),), "home shelf")],
            id="reported-any-case",
        ),
        pytest.param(
            ("root@infra.example.net",),
            [("NEEDS_SECOND_REVIEW", "admin", ("root@infra.example.net",), None)],
            id="admin",
        ),
        pytest.param(
            (ORGANISER, "b@events.example.com", OTHER),
            [("NEEDS_SECOND_REVIEW", "organiser", (ORGANISER, "b@events.example.com"), None)],
            id="grouped-by-role",
        ),
        pytest.param(
            (MOD, REPORTED),
            [
                ("NEEDS_SECOND_REVIEW", "reported", (REPORTED,), "home shelf"),
                ("NEEDS_SECOND_REVIEW", "moderator", (MOD,), None),
            ],
            id="one-finding-per-role",
        ),
        pytest.param(
            (MOD, MOD.upper()), [("NEEDS_SECOND_REVIEW", "moderator", (MOD,), None)], id="deduplicated"
        ),
    ],
)
def test_reviewed_roles(
    rcpts: tuple[str, ...], expected: list[tuple[str, str, tuple[str, ...], str | None]]
) -> None:
    assert sorted(findings(*rcpts)) == sorted(expected)


def test_roles_are_configurable() -> None:
    params = Params(roles=(Role.REPORTER, Role.OTHER))
    assert findings(MOD, params=params) == []
    assert {kind for _code, kind, _r, _c in findings(REPORTER, OTHER, params=params)} == {"reporter", "other"}


def test_advice_names_role_and_recipients_only() -> None:
    envelope = Envelope(mail_from=ADA, rcpt_tos=(MOD,), authenticated_as=ADA)
    (finding,) = audience_review.check(MESSAGE, envelope, CONTEXT, Params())
    assert finding.advice == (
        "Mail to a moderator (mods@forum.example.net) is sent only after a second committee member has "
        "reviewed it for anything that could identify a reporter or witness."
    )
    assert finding.where == "envelope"
