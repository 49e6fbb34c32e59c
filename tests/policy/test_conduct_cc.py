"""conduct-cc: the conduct address must be a visible recipient, and a real one."""

from __future__ import annotations

import pytest

from gateway.policy.matcher import IdentityMatcher
from gateway.policy.model import Address, Envelope, ParsedMessage, Rewrite, RuleContext
from gateway.policy.rules import conduct_cc

CONDUCT = "conduct@example.org"
ADA = "ada@example.org"
OUTSIDER = "mod@forum.example.com"


def context() -> RuleContext:
    return RuleContext(
        conduct_address=CONDUCT,
        committee=frozenset({ADA, "bram@example.org"}),
        member_names=((ADA, "Ada Quill"), ("bram@example.org", "Bram Oduya")),
        internal_domains=frozenset({"example.org"}),
        finder=IdentityMatcher.build(()),
        consents=frozenset(),
    )


def message(
    to: tuple[Address, ...] = (), cc: tuple[Address, ...] = (), bcc: tuple[Address, ...] = ()
) -> ParsedMessage:
    return ParsedMessage(
        raw=b"",
        message_id="<m1@example.org>",
        in_reply_to=(),
        references=(),
        from_=(Address("Ada Quill", ADA),),
        to=to,
        cc=cc,
        bcc=bcc,
        subject="Hello",
        segments=(),
        uninspectable=(),
        ambiguities=(),
        signed=False,
    )


def envelope(*rcpt: str) -> Envelope:
    return Envelope(mail_from=ADA, rcpt_tos=rcpt, authenticated_as=ADA)


def mbox(address: str, name: str = "") -> Address:
    return Address(name, address)


MISSING = Rewrite(add_cc=(Address("", CONDUCT),), add_envelope_recipients=(CONDUCT,))
MISSING_IN_HEADERS_ONLY = Rewrite(add_cc=(Address("", CONDUCT),))
NOT_RECIPIENT = Rewrite(add_envelope_recipients=(CONDUCT,))

CASES = [
    pytest.param(
        message(to=(mbox(OUTSIDER),), cc=(mbox(CONDUCT),)),
        envelope(OUTSIDER, CONDUCT),
        "all",
        None,
        id="in-cc",
    ),
    pytest.param(message(to=(mbox(CONDUCT),)), envelope(CONDUCT), "all", None, id="in-to"),
    pytest.param(
        message(to=(mbox(OUTSIDER),), cc=(mbox("Conduct@Example.ORG", "Committee"),)),
        envelope(OUTSIDER, "CONDUCT@example.org"),
        "all",
        None,
        id="case-insensitive",
    ),
    pytest.param(
        message(to=(mbox(OUTSIDER),)),
        envelope(OUTSIDER),
        "all",
        ("CONDUCT_ADDRESS_MISSING", MISSING),
        id="absent",
    ),
    pytest.param(
        message(to=(mbox(OUTSIDER),), bcc=(mbox(CONDUCT),)),
        envelope(OUTSIDER, CONDUCT),
        "all",
        ("CONDUCT_ADDRESS_MISSING", MISSING_IN_HEADERS_ONLY),
        id="only-bcc",
    ),
    pytest.param(
        message(to=(mbox(OUTSIDER),)),
        envelope(OUTSIDER, CONDUCT),
        "all",
        ("CONDUCT_ADDRESS_MISSING", MISSING_IN_HEADERS_ONLY),
        id="only-envelope",
    ),
    pytest.param(
        message(to=(mbox(OUTSIDER, "conduct@example.org"),)),
        envelope(OUTSIDER),
        "all",
        ("CONDUCT_ADDRESS_MISSING", MISSING),
        id="only-in-display-name",
    ),
    pytest.param(
        message(to=(mbox("conduct+list@example.org"),)),
        envelope(OUTSIDER, "conduct+list@example.org"),
        "all",
        ("CONDUCT_ADDRESS_MISSING", MISSING),
        id="look-alike-address",
    ),
    pytest.param(
        message(to=(mbox(OUTSIDER),), cc=(mbox(CONDUCT),)),
        envelope(OUTSIDER),
        "all",
        ("CONDUCT_ADDRESS_NOT_RECIPIENT", NOT_RECIPIENT),
        id="in-cc-not-in-envelope",
    ),
    pytest.param(
        message(to=(mbox(ADA),)),
        envelope(ADA),
        "all",
        ("CONDUCT_ADDRESS_MISSING", MISSING),
        id="member-only-all",
    ),
    pytest.param(message(to=(mbox(ADA),)), envelope(ADA), "outside", None, id="member-only-outside-scope"),
    pytest.param(
        message(to=(mbox(ADA),)),
        envelope(ADA, CONDUCT),
        "outside",
        None,
        id="committee-and-conduct-outside-scope",
    ),
    pytest.param(
        message(to=(mbox(ADA),)),
        envelope(ADA, OUTSIDER),
        "outside",
        ("CONDUCT_ADDRESS_MISSING", MISSING),
        id="outsider-in-envelope-outside-scope",
    ),
]


@pytest.mark.parametrize(("msg", "env", "scope", "expected"), CASES)
def test_conduct_cc(
    msg: ParsedMessage, env: Envelope, scope: str, expected: tuple[str, Rewrite] | None
) -> None:
    findings = conduct_cc.check(msg, env, context(), conduct_cc.Params.model_validate({"scope": scope}))
    if expected is None:
        assert findings == []
        return
    (finding,) = findings
    code, rewrite = expected
    assert (finding.rule, finding.code, finding.rewrite) == ("conduct-cc", code, rewrite)
    assert CONDUCT in finding.advice


def test_display_name_is_used_for_the_added_cc() -> None:
    params = conduct_cc.Params(display_name="Conduct Committee")
    (finding,) = conduct_cc.check(message(to=(mbox(OUTSIDER),)), envelope(OUTSIDER), context(), params)
    assert finding.rewrite is not None
    assert finding.rewrite.add_cc == (Address("Conduct Committee", CONDUCT),)


@pytest.mark.parametrize(
    ("msg", "env", "hint"),
    [
        pytest.param(message(to=(mbox(OUTSIDER),)), envelope(OUTSIDER, CONDUCT), "Bcc", id="bcc"),
        pytest.param(
            message(to=(mbox(OUTSIDER, CONDUCT),)), envelope(OUTSIDER), "display name", id="display-name"
        ),
    ],
)
def test_advice_says_why_an_address_the_sender_added_does_not_count(
    msg: ParsedMessage, env: Envelope, hint: str
) -> None:
    (finding,) = conduct_cc.check(msg, env, context(), conduct_cc.Params())
    assert hint in finding.advice
