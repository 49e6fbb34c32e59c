"""communication: minimising, blaming, intent, vague wording; decision notices; directives to organisers."""

from __future__ import annotations

import pytest

from gateway.policy.audiences import Audiences, Membership, Role
from gateway.policy.matcher import IdentityMatcher
from gateway.policy.mime import parse_message
from gateway.policy.model import Envelope, Finding, RuleContext
from gateway.policy.rules import communication
from gateway.policy.rules.communication import DecisionComponent, Params
from tests.policy.builders import Message, Multipart, Part, plain, render

ADA = "ada@example.org"
CONDUCT = "conduct@example.org"
REPORTED = "pat@example.com"
ORGANISER = "team@events.example.com"
MOD = "mods@forum.example.net"

CONTEXT = RuleContext(
    conduct_address=CONDUCT,
    committee=frozenset({ADA}),
    member_names=(),
    internal_domains=frozenset(),
    finder=IdentityMatcher.build(()),
    consents=frozenset(),
    audiences=Audiences.build(
        conduct_address=CONDUCT,
        committee=[ADA],
        addresses=[(REPORTED, Membership(Role.REPORTED, "home shelf"))],
        domains=[
            ("events.example.com", Membership(Role.ORGANISER)),
            ("forum.example.net", Membership(Role.MODERATOR)),
        ],
    ),
)


def check(raw: bytes, *rcpts: str, params: Params | None = None) -> list[Finding]:
    envelope = Envelope(mail_from=ADA, rcpt_tos=rcpts or (REPORTED, CONDUCT), authenticated_as=ADA)
    return communication.check(parse_message(raw), envelope, CONTEXT, params or Params())


def codes(findings: list[Finding]) -> list[str]:
    return sorted(f.code for f in findings)


LINTS = [
    ("I'm sure it was just a misunderstanding.", "MINIMISING_LANGUAGE", '"just a misunderstanding"'),
    ("This is no big deal, but", "MINIMISING_LANGUAGE", '"no big deal"'),
    ("They said it was a joke.", "MINIMISING_LANGUAGE", '"it was a joke"'),
    ("Perhaps they were too sensitive.", "BLAMING_LANGUAGE", '"too sensitive"'),
    ("Some say people are overreacting.", "BLAMING_LANGUAGE", '"overreacting"'),
    ("We know you didn't mean to upset anyone.", "INTENT_ASSUMPTION", '"didn\'t mean to"'),
    ("We know you didn’t mean to upset anyone.", "INTENT_ASSUMPTION", '"didn\'t mean to"'),  # curly
    ("We know you didnt mean to upset anyone.", "INTENT_ASSUMPTION", '"didnt mean to"'),
    ("We know you did not mean to upset anyone.", "INTENT_ASSUMPTION", '"did not mean to"'),
    ("It seems you deliberately ignored them.", "INTENT_ASSUMPTION", '"you deliberately"'),
    ("Please be better.", "VAGUE_REQUEST", '"be better"'),
    ("You need to do better in future.", "VAGUE_REQUEST", '"do better"'),
    ("Try to be nicer to others", "VAGUE_REQUEST", '"be nicer"'),
    # Across line breaks and in any case.
    ("I'm sure it was JUST A\nMISUNDERSTANDING, really.", "MINIMISING_LANGUAGE", '"just a misunderstanding"'),
    ("perhaps they were too\r\n    sensitive", "BLAMING_LANGUAGE", '"too sensitive"'),
]
NOT_LINTS = [
    "To avoid any misunderstanding, here is what we decided.",
    "We want to be better prepared next year and do better work.",  # not requests to the recipient
    "Sensitive information has been removed. This was not a joke to anyone.",
    "We deliberated for a week.",
    "We meant to write sooner; the plan is here.",
    "Please don't contact the people involved.",
]


@pytest.mark.parametrize(("body", "code", "detail"), [pytest.param(*case, id=case[0][:30]) for case in LINTS])
def test_lints(body: str, code: str, detail: str) -> None:
    (finding,) = check(plain(body))
    assert (finding.code, finding.where, finding.private_detail) == (code, "part 1 (text/plain)", detail)
    assert detail.strip('"') not in finding.advice.lower()


@pytest.mark.parametrize("body", NOT_LINTS)
def test_not_lints(body: str) -> None:
    assert check(plain(body)) == []


def test_subject_and_html_are_read_quotes_are_not() -> None:
    html = (
        "<p>It was <b>just a</b>\n<i>misunderstanding</i>.</p>"
        "<div>On Mon, Pat wrote:</div><blockquote>be better</blockquote>"
    )
    raw = render(
        Message(
            headers=(("From", ADA), ("To", REPORTED), ("Subject", "Do better")),
            body=Multipart(
                subtype="alternative",
                parts=(
                    Part(body="Hello.\n\n> you are too sensitive\n> no big deal\n"),
                    Part(content_type="text/html", body=html),
                ),
            ),
        )
    )
    assert sorted((f.code, f.where) for f in check(raw)) == [
        ("MINIMISING_LANGUAGE", "part 2 (text/html)"),
        ("VAGUE_REQUEST", "header Subject"),
    ]


def test_phrase_lists_are_configurable() -> None:
    params = Params(minimising=("nur ein missverständnis",), blaming=(), intent=(), vague_requests=())
    assert codes(check(plain("Das war nur ein Missverständnis."), params=params)) == ["MINIMISING_LANGUAGE"]
    assert check(plain("Just a misunderstanding. Too sensitive."), params=params) == []


# --- decision notices ---------------------------------------------------------------------------

TEMPLATE = {
    "behaviour": "What happened:\nAt the meet-up you repeatedly commented on a participant's appearance.\n",
    "impact": "Impact:\nSeveral people left the meet-up early and no longer feel safe attending.\n",
    "expectations": "What we expect from you:\nDo not comment on anyone's appearance at community events.\n",
    "consequences": "Consequences:\nYou may not attend the next two meet-ups.\n",
}


def notice(parts: dict[str, str], subject: str = "[Decision] Code of Conduct report") -> bytes:
    return plain("Hello,\n\n" + "\n".join(parts.values()), Subject=subject)


def test_complete_notice_passes() -> None:
    assert check(notice(TEMPLATE)) == []


@pytest.mark.parametrize("missing", list(TEMPLATE))
def test_missing_component_is_named(missing: str) -> None:
    parts = {name: text for name, text in TEMPLATE.items() if name != missing}
    (finding,) = check(notice(parts))
    assert (finding.code, finding.kind) == ("DECISION_COMPONENT_MISSING", missing)
    assert f"no {missing} part" in finding.advice
    assert '"What happened", "Impact", "What we expect from you", "Consequences"' in finding.advice


def test_all_missing_are_named() -> None:
    findings = check(notice({"other": "We are writing about the meet-up.\n"}))
    assert sorted(f.kind for f in findings) == sorted(TEMPLATE)


def test_headings_may_be_decorated() -> None:
    body = (
        "## What happened\ntext\n**Impact:** text\n3. What we expect from you: text\n- CONSEQUENCES -\ntext\n"
    )
    findings = check(plain(body, Subject="[decision] x"), params=Params(decision_headings_only=True))
    assert [f.kind for f in findings] == ["consequences"]  # "- CONSEQUENCES -" is not a heading


def test_cues_count_unless_headings_only() -> None:
    body = (
        "We received a report that you posted insults. The impact on the channel was serious. "
        "We expect you to stop. As a consequence your account is suspended."
    )
    assert check(plain(body, Subject="[decision] x")) == []
    strict = check(plain(body, Subject="[decision] x"), params=Params(decision_headings_only=True))
    assert sorted(f.kind for f in strict) == sorted(TEMPLATE)


def test_only_tagged_messages_are_checked() -> None:
    assert check(notice({}, subject="Code of Conduct report")) == []


def test_quoted_headings_do_not_count() -> None:
    body = "Hello\n\n" + "".join(f"> {line}\n" for text in TEMPLATE.values() for line in text.splitlines())
    assert len(check(plain(body, Subject="[decision] x"))) == 4


def test_components_and_tag_are_configurable() -> None:
    params = Params(
        decision_tag="#entscheidung", decision_components={"folgen": DecisionComponent(headings=("folgen",))}
    )
    (finding,) = check(plain("Hallo", Subject="#Entscheidung"), params=params)
    assert finding.kind == "folgen"
    assert check(plain("Hallo\nFolgen:\nkeine", Subject="#Entscheidung"), params=params) == []


# --- directives to organisers -------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "Please don't invite this person to future events.",
        "Please do not invite them again.",
        "You should ban them from the venue.",
        "Do not allow them\nto register.",
        "Please DONT INVITE them.",
    ],
)
def test_directives_to_organisers(body: str) -> None:
    (finding,) = check(plain(body), ORGANISER, CONDUCT)
    assert (finding.code, finding.recipients) == ("DIRECTIVE_TO_ORGANISER", (ORGANISER,))
    assert "the decision is theirs" in finding.advice
    assert "an event organiser" in finding.advice


def test_directives_are_fine_to_others_and_information_is_fine_to_organisers() -> None:
    directive = plain("Please don't invite this person.")
    assert check(directive, MOD, CONDUCT) == []
    assert check(directive, ADA, CONDUCT) == []
    information = plain(
        "This person has been the subject of Code of Conduct reports about unwanted contact. "
        "The decision whether to invite them is yours."
    )
    assert check(information, ORGANISER) == []
    assert codes(check(directive, MOD, params=Params(directive_roles=(Role.MODERATOR,)))) == [
        "DIRECTIVE_TO_ORGANISER"
    ]
