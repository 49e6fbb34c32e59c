"""recipient-banner: [+ Name] / [- Name] lines for every change of participants, and no Bcc on cases."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.policy.engine import compile_policy, rule_context
from gateway.policy.loader import parse_policy_text
from gateway.policy.matcher import IdentityMatcher
from gateway.policy.model import (
    Address,
    Consent,
    Envelope,
    IdentityKind,
    ParsedMessage,
    ProtectedIdentity,
    Rewrite,
    RuleContext,
    ThreadFacts,
)
from gateway.policy.rules import recipient_banner

CONDUCT = "conduct@example.org"
ADA = Address("Ada Quill", "ada@example.org")
ADA_OTHER = Address("", "ada.quill@mail.example.net")  # Ada's second address
BRAM = Address("", "bram@example.org")  # a member, written without a display name
REPORTER = Address("Robin Castellano", "robin@example.net")
MAYA = Address("Maya Example", "maya@example.com")
ALEX = Address("Alex Doe", "alex@example.com")
MOD = Address("Forum Moderators", "mods@forum.example.com")
CONDUCT_BOX = Address("Conduct", CONDUCT)
PROTECTED = ProtectedIdentity(
    case="home shelf", person="quiet-heron", kind=IdentityKind.NAME, value="Robin Castellano"
)


def context(
    parent: tuple[Address, ...] | None = None,
    case: str | None = None,
    consents: frozenset[Consent] = frozenset(),
) -> RuleContext:
    thread = ThreadFacts(parent_known=parent is not None, parent_participants=parent or (), case=case)
    return RuleContext(
        conduct_address=CONDUCT,
        committee=frozenset({ADA.address, ADA_OTHER.address, BRAM.address}),
        member_names=(
            (ADA.address, "Ada Quill"),
            (ADA_OTHER.address, "Ada Quill"),
            (BRAM.address, "Bram Oduya"),
        ),
        internal_domains=frozenset({"example.org"}),
        finder=IdentityMatcher.build([PROTECTED]),
        consents=consents,
        thread=thread,
    )


def message(
    *,
    sender: Address = ADA,
    to: tuple[Address, ...] = (),
    cc: tuple[Address, ...] = (CONDUCT_BOX,),
    leading: tuple[str, ...] = ("Hello,\n",),
) -> ParsedMessage:
    return ParsedMessage(
        raw=b"",
        message_id="<reply@example.org>",
        in_reply_to=("<parent@example.org>",),
        references=("<parent@example.org>",),
        from_=(sender,),
        to=to,
        cc=cc,
        bcc=(),
        subject="Re: your report",
        segments=(),
        uninspectable=(),
        ambiguities=(),
        signed=False,
        leading_text=leading,
    )


def envelope(msg: ParsedMessage, *extra: str) -> Envelope:
    rcpts = tuple(box.address for box in (*msg.to, *msg.cc)) + extra
    return Envelope(mail_from=msg.from_[0].address, rcpt_tos=rcpts, authenticated_as=msg.from_[0].address)


def run(
    msg: ParsedMessage, ctx: RuleContext, *extra: str, **params: bool
) -> list[tuple[str, Rewrite | None]]:
    findings = recipient_banner.check(msg, envelope(msg, *extra), ctx, recipient_banner.Params(**params))
    return [(finding.code, finding.rewrite) for finding in findings]


def banner(*lines: str) -> Rewrite:
    return Rewrite(banner_lines=lines)


PARENT = (ADA, ALEX, CONDUCT_BOX)  # Ada wrote to Alex, copying the conduct address
CASE_PARENT = (ADA, REPORTER, CONDUCT_BOX)  # Ada wrote to the reporter of a case

CASES = [
    pytest.param(message(to=(ALEX, MAYA)), None, [], id="parent-unknown"),
    pytest.param(message(to=(ALEX,)), PARENT, [], id="nobody-changed"),
    pytest.param(message(to=(ALEX,), cc=()), PARENT, [], id="conduct-address-never-counts"),
    pytest.param(
        message(sender=BRAM, to=(ALEX,)),
        PARENT,
        [("BANNER_MISSING", banner("[- Ada Quill]"))],
        id="other-member-dropped",
    ),
    pytest.param(message(sender=ADA_OTHER, to=(ALEX,)), PARENT, [], id="member-from-second-address"),
    pytest.param(message(to=(ALEX,)), (ALEX, CONDUCT_BOX), [], id="sender-not-in-parent-is-not-added"),
    pytest.param(
        message(to=(ALEX, MAYA)),
        PARENT,
        [("BANNER_MISSING", banner("[+ Maya Example]"))],
        id="added-no-banner",
    ),
    pytest.param(
        message(to=(ALEX, MAYA), leading=("[+ Maya Example]\nHello\n",)),
        PARENT,
        [],
        id="added-display-name",
    ),
    pytest.param(
        message(to=(ALEX, MAYA), leading=("[+ maya@EXAMPLE.com]\n\nHi",)), PARENT, [], id="added-address"
    ),
    pytest.param(
        message(to=(ALEX, MAYA), leading=("  [+maya example]  \nHi",)), PARENT, [], id="case-and-spacing"
    ),
    pytest.param(
        message(to=(ALEX, MAYA), leading=("[+ Maya]\nHi",)),
        PARENT,
        [],
        id="first-name-like-the-guidelines",
    ),
    pytest.param(
        message(to=(ALEX, MAYA), leading=("\n\n[+ Maya Example]\n\nHi",)),
        PARENT,
        [],
        id="blank-lines-first",
    ),
    pytest.param(
        message(to=(MAYA,), cc=(CONDUCT_BOX,)),
        PARENT,
        [("BANNER_MISSING", banner("[+ Maya Example]", "[- Alex Doe]"))],
        id="added-and-removed-no-banner",
    ),
    pytest.param(
        message(to=(MAYA,), leading=("[- Alex Doe]\n[+ Maya Example]\nHi",)),
        PARENT,
        [],
        id="both-any-order",
    ),
    pytest.param(
        message(to=(MAYA,), leading=("[– alex doe]\n[+ Maya]\nHi",)),
        PARENT,
        [],
        id="smart-dash-accepted",
    ),
    pytest.param(
        message(to=(ALEX, MAYA), leading=("[+ Sam Other]\nHi",)),
        PARENT,
        [("BANNER_MISSING", None)],
        id="wrong-person",
    ),
    pytest.param(
        message(to=(MAYA,), leading=("[+ Maya Example]\nHi",)),
        PARENT,
        [("BANNER_MISSING", None)],
        id="incomplete",
    ),
    pytest.param(
        message(to=(ALEX, MAYA), leading=("[- Maya Example]\nHi",)),
        PARENT,
        [("BANNER_MISSING", None)],
        id="wrong-sign",
    ),
    pytest.param(
        message(to=(ALEX, MAYA), leading=("[+ Maya Example]\n[+ Sam Other]\nHi",)),
        PARENT,
        [("BANNER_MISSING", None)],
        id="extra-line",
    ),
    pytest.param(
        message(to=(ALEX,), leading=("[- Alex Doe]\nHi",)),
        PARENT,
        [("BANNER_MISSING", None)],
        id="banner-but-nobody-changed",
    ),
    pytest.param(
        message(to=(ALEX, MAYA), leading=("Hi\n[+ Maya Example]\n",)),
        PARENT,
        [("BANNER_MISSING", banner("[+ Maya Example]"))],
        id="banner-after-text-does-not-count",
    ),
    pytest.param(
        message(to=(ALEX, MAYA), leading=("> [+ Maya Example]\nHi",)),
        PARENT,
        [("BANNER_MISSING", banner("[+ Maya Example]"))],
        id="quoted-banner-does-not-count",
    ),
    pytest.param(
        message(to=(ALEX, MAYA), leading=("[+ Maya Example]\nHi", "Hi (html without banner)")),
        PARENT,
        [("BANNER_MISSING", None)],
        id="html-version-lacks-banner",
    ),
    pytest.param(
        message(to=(ALEX, MAYA), leading=("Hi", "Hi")),
        PARENT,
        [("BANNER_MISSING", banner("[+ Maya Example]"))],
        id="both-versions-lack-banner",
    ),
    pytest.param(
        message(to=(ALEX, MAYA), leading=()),
        PARENT,
        [("BANNER_MISSING", None)],
        id="no-text-body-cannot-be-rewritten",
    ),
    pytest.param(
        message(to=(ALEX, BRAM)),
        PARENT,
        [("BANNER_MISSING", banner("[+ Bram Oduya]"))],
        id="member-named-from-policy",
    ),
    pytest.param(
        message(to=(ALEX, Address("", "x@example.com"))),
        PARENT,
        [("BANNER_MISSING", banner("[+ x@example.com]"))],
        id="no-display-name-uses-address",
    ),
    pytest.param(
        message(to=(ALEX, MAYA, Address("Maya Other", "m2@example.com")), leading=("[+ Maya]\nHi",)),
        PARENT,
        [("BANNER_MISSING", None)],
        id="ambiguous-first-name",
    ),
    pytest.param(
        message(to=(ALEX, Address("Evil ] [+ x", "evil@example.com"))),
        PARENT,
        [("BANNER_MISSING", banner("[+ evil@example.com]"))],
        id="unsafe-display-name-uses-address",
    ),
]


@pytest.mark.parametrize(("msg", "parent", "expected"), CASES)
def test_banner(
    msg: ParsedMessage, parent: tuple[Address, ...] | None, expected: list[tuple[str, Rewrite | None]]
) -> None:
    assert run(msg, context(parent)) == expected


def test_advice_gives_the_exact_lines_to_paste() -> None:
    msg = message(to=(MAYA,))
    (finding,) = recipient_banner.check(msg, envelope(msg), context(PARENT), recipient_banner.Params())
    assert "[+ Maya Example] [- Alex Doe]" in finding.advice
    assert finding.recipients == (MAYA.address,)


def test_removing_a_reporter_in_front_of_an_outsider_cannot_be_bannered() -> None:
    # The banner would carry the reporter's name to the moderators: no rewrite can fix that.
    msg = message(to=(MOD,))
    assert run(msg, context(CASE_PARENT)) == [("BANNER_NAMES_PROTECTED_PERSON", None)]


def test_consent_for_every_outsider_allows_the_banner() -> None:
    consent = Consent("home shelf", "quiet-heron", MOD.address, "mail of 2024-03-02", "2024-03-02")
    msg = message(to=(MOD,))
    expected = [("BANNER_MISSING", banner("[+ Forum Moderators]", "[- Robin Castellano]"))]
    assert run(msg, context(CASE_PARENT, consents=frozenset({consent}))) == expected


def test_consent_for_another_recipient_does_not() -> None:
    consent = Consent("home shelf", "quiet-heron", "someone@else.example", "mail", "2024-03-02")
    msg = message(to=(MOD,))
    assert run(msg, context(CASE_PARENT, consents=frozenset({consent}))) == [
        ("BANNER_NAMES_PROTECTED_PERSON", None)
    ]


def test_removing_a_reporter_inside_the_committee_is_an_ordinary_banner() -> None:
    msg = message(to=(BRAM,))
    expected = [("BANNER_MISSING", banner("[+ Bram Oduya]", "[- Robin Castellano]"))]
    assert run(msg, context(CASE_PARENT)) == expected


BCC = [
    pytest.param("home shelf", ("mods@forum.example.com",), {}, ["BCC_ON_CASE_THREAD"], id="bcc-outsider"),
    pytest.param(None, ("mods@forum.example.com",), {}, [], id="not-a-case-thread"),
    pytest.param("home shelf", (), {}, [], id="no-bcc"),
    pytest.param("home shelf", ("ADA@example.org",), {}, [], id="bcc-to-self"),
    pytest.param("home shelf", (BRAM.address,), {}, ["BCC_ON_CASE_THREAD"], id="bcc-member"),
    pytest.param(
        "home shelf", (BRAM.address,), {"allow_bcc_to_committee": True}, [], id="bcc-member-allowed"
    ),
    pytest.param(
        "home shelf",
        ("mods@forum.example.com",),
        {"allow_bcc_to_committee": True},
        ["BCC_ON_CASE_THREAD"],
        id="outsider-never",
    ),
]


@pytest.mark.parametrize(("case", "extra", "params", "expected"), BCC)
def test_bcc_on_case_thread(
    case: str | None, extra: tuple[str, ...], params: dict[str, bool], expected: list[str]
) -> None:
    msg = message(to=(REPORTER,), cc=())  # conduct address only in the envelope: conduct-cc's business
    findings = recipient_banner.check(
        msg, envelope(msg, CONDUCT, *extra), context(case=case), recipient_banner.Params(**params)
    )
    assert [finding.code for finding in findings] == expected
    for finding in findings:
        assert finding.recipients == extra
        assert finding.case == case


PASTE_LINE = re.compile(r"\[[+-] [^\[\]\r\n]+\]")


@pytest.mark.parametrize(
    ("msg", "parent", "expected_lines"),
    [
        pytest.param(message(to=(MAYA,)), PARENT, ["[+ Maya Example]", "[- Alex Doe]"], id="lines-to-paste"),
        pytest.param(message(to=(ALEX,), leading=("[- Alex Doe]\nHi",)), PARENT, [], id="nothing-to-paste"),
        pytest.param(message(to=(MOD,)), CASE_PARENT, [], id="protected-nothing-to-paste"),
    ],
)
def test_advice_shows_bracketed_lines_only_when_they_are_to_be_pasted(
    msg: ParsedMessage, parent: tuple[Address, ...], expected_lines: list[str]
) -> None:
    # The reply text offers every "[+ X]" / "[- X]" in the advice as a line to paste.
    (finding,) = recipient_banner.check(msg, envelope(msg), context(parent), recipient_banner.Params())
    assert PASTE_LINE.findall(finding.advice) == expected_lines


# --- members' configured banner names (organisation.members[].banner_name) ---------------------

BANNER_NAMES = (
    (ADA.address, "Ada Q. (committee)"),
    (ADA_OTHER.address, "Ada Q. (committee)"),
    (BRAM.address, "Bram O."),
)


def named_context(parent: tuple[Address, ...]) -> RuleContext:
    return replace(context(parent), banner_names=BANNER_NAMES)


BANNER_NAME_CASES = [
    pytest.param(
        message(to=(ALEX, BRAM)), [("BANNER_MISSING", banner("[+ Bram O.]"))], id="inserted-with-banner-name"
    ),
    pytest.param(
        message(to=(ALEX, Address("B. Oduya", BRAM.address))),
        [("BANNER_MISSING", banner("[+ Bram O.]"))],
        id="banner-name-beats-the-header-display-name",
    ),
    pytest.param(message(to=(ALEX, BRAM), leading=("[+ Bram O.]\nHi",)), [], id="banner-name-accepted"),
    pytest.param(message(to=(ALEX, BRAM), leading=("[+ bram o.]\nHi",)), [], id="banner-name-any-case"),
    pytest.param(message(to=(ALEX, BRAM), leading=("[+ Bram Oduya]\nHi",)), [], id="policy-name-accepted"),
    pytest.param(message(to=(ALEX, BRAM), leading=("[+ bram@example.org]\nHi",)), [], id="address-accepted"),
    pytest.param(
        message(to=(ALEX, Address("B. Oduya", BRAM.address)), leading=("[+ B. Oduya]\nHi",)),
        [],
        id="header-display-name-accepted",
    ),
    pytest.param(
        message(to=(ALEX, BRAM), leading=("[+ Bram Other]\nHi",)),
        [("BANNER_MISSING", None)],
        id="another-name-is-wrong",
    ),
    pytest.param(
        message(sender=BRAM, to=(ALEX,)),
        [("BANNER_MISSING", banner("[- Ada Q. (committee)]"))],
        id="removed-member-named-by-banner-name",
    ),
    pytest.param(
        message(sender=BRAM, to=(ALEX,), leading=("[- Ada Quill]\nHi",)), [], id="removed-by-policy-name"
    ),
    pytest.param(
        message(sender=BRAM, to=(ALEX, ADA_OTHER), leading=()), [], id="member-on-another-address-unchanged"
    ),
    pytest.param(
        message(to=(ALEX, MAYA)), [("BANNER_MISSING", banner("[+ Maya Example]"))], id="non-members-unchanged"
    ),
]


@pytest.mark.parametrize(("msg", "expected"), BANNER_NAME_CASES)
def test_banner_names(msg: ParsedMessage, expected: list[tuple[str, Rewrite | None]]) -> None:
    assert run(msg, named_context(PARENT)) == expected


def test_banner_name_comes_from_the_policy() -> None:
    document = parse_policy_text(
        "organisation:\n  conduct_address: conduct@example.org\n  members:\n"
        "    - name: Ada Quill\n      banner_name: Ada Q. (committee)\n"
        "      addresses: [ada@example.org, Ada.Quill@mail.example.net]\n"
        "    - name: Bram Oduya\n      addresses: [bram@example.org]\n"
        "rules:\n  - rule: recipient-banner\n    action: rewrite\n",
        Path("policy.yaml"),
    )
    policy = compile_policy(document, b"")
    assert policy.banner_names == (
        ("ada@example.org", "Ada Q. (committee)"),
        ("ada.quill@mail.example.net", "Ada Q. (committee)"),
    )
    assert rule_context(policy, ThreadFacts()).banner_names == policy.banner_names


BANNER_LABELS = st.text(
    alphabet=st.characters(whitelist_categories=("Lu", "Ll", "Nd"), whitelist_characters=" .()-"),
    min_size=2,
    max_size=30,
).filter(lambda text: len(" ".join(text.split())) >= 2)


@settings(max_examples=150, deadline=None)
@given(
    label=BANNER_LABELS,
    form=st.sampled_from(["banner", "name", "address"]),
    upper=st.booleans(),
    padding=st.sampled_from(["", " ", "  "]),
)
def test_any_member_banner_name_is_asked_for_and_every_form_accepted(
    label: str, form: str, upper: bool, padding: str
) -> None:
    label = " ".join(label.split())
    named = replace(context(PARENT), banner_names=((BRAM.address, label),))
    assert run(message(to=(ALEX, BRAM)), named) == [("BANNER_MISSING", banner(f"[+ {label}]"))]
    written = {"banner": label, "name": "Bram Oduya", "address": BRAM.address}[form]
    written = written.upper() if upper else written
    assert run(message(to=(ALEX, BRAM), leading=(f"[+{padding}{written}{padding}]\nHi",)), named) == []
