"""reporter-protection: protected identities and unreadable parts never reach outsiders unnoticed."""

from __future__ import annotations

import pytest

from gateway.policy.matcher import IdentityMatcher
from gateway.policy.mime import parse_message
from gateway.policy.model import (
    Consent,
    Envelope,
    Finding,
    IdentityKind,
    ProtectedIdentity,
    RuleContext,
)
from gateway.policy.rules import reporter_protection
from gateway.policy.rules.reporter_protection import Params
from tests.policy.builders import (
    Attached,
    Message,
    Multipart,
    Part,
    encoded_word,
    plain,
    render,
    with_headers,
)

CONDUCT = "conduct@example.org"
ADA = "ada@example.org"
BRAM = "bram@example.org"
OUTSIDER = "moderator@forum.example.net"
OTHER_OUTSIDER = "organiser@events.example.net"
REPORTER_ADDRESS = "jin.park@mail.example.net"

IDENTITIES = (
    # "park" is an everyday word: a lone "Park" is not reported for this person.
    ProtectedIdentity("home-shelf", "r1", IdentityKind.NAME, "Jin Park", everyday_words=("Park",)),
    ProtectedIdentity("home-shelf", "r1", IdentityKind.ALIAS, "JP"),
    ProtectedIdentity("home-shelf", "r1", IdentityKind.ADDRESS, REPORTER_ADDRESS),
    ProtectedIdentity("home-shelf", "r1", IdentityKind.USERNAME, "jpark"),
    ProtectedIdentity("home-shelf", "w1", IdentityKind.NAME, "Maya Lind"),
)
FINDER = IdentityMatcher.build(IDENTITIES)


def context(*consents: Consent, finder: IdentityMatcher = FINDER) -> RuleContext:
    return RuleContext(
        conduct_address=CONDUCT,
        committee=frozenset({ADA, BRAM}),
        member_names=((ADA, "Ada Quill"), (BRAM, "Bram Oduya")),
        internal_domains=frozenset({"example.org"}),
        finder=finder,
        consents=frozenset(consents),
    )


def consent(person: str, recipient: str, case: str = "home-shelf") -> Consent:
    return Consent(
        case=case, person=person, recipient=recipient, reference="letter 2024-01", date="2024-01-02"
    )


def run(
    raw: bytes,
    *recipients: str,
    params: Params | None = None,
    consents: tuple[Consent, ...] = (),
    finder: IdentityMatcher = FINDER,
) -> list[Finding]:
    envelope = Envelope(mail_from=ADA, rcpt_tos=recipients, authenticated_as=ADA)
    rule_context = context(*consents, finder=finder)
    return reporter_protection.check(parse_message(raw), envelope, rule_context, params or Params())


def summary(findings: list[Finding]) -> set[tuple[str, str, str, tuple[str, ...]]]:
    return {(finding.code, finding.kind, finding.where, finding.recipients) for finding in findings}


@pytest.mark.parametrize(
    ("raw", "recipients", "expected"),
    [
        pytest.param(
            plain(Subject="About Jin Park"),
            (OUTSIDER, CONDUCT),
            {("PROTECTED_IDENTITY", "name", "header Subject", (OUTSIDER,))},
            id="subject-to-outsider",
        ),
        pytest.param(plain(Subject="About Jin Park"), (BRAM, CONDUCT), set(), id="committee-only"),
        pytest.param(plain("Jin said hello"), (ADA.upper(), CONDUCT), set(), id="committee-address-any-case"),
        pytest.param(
            plain("Thanks, Jin Park", To=f"Bram <{BRAM}>"),
            (BRAM, OUTSIDER),
            {("PROTECTED_IDENTITY", "name", "part 1 (text/plain)", (OUTSIDER,))},
            id="envelope-only-recipient",
        ),
        pytest.param(
            plain("hello", To=f"Bram <{BRAM}>", Bcc=f"{encoded_word('Maya Lind')} <{OUTSIDER}>"),
            (BRAM, OUTSIDER),
            {("PROTECTED_IDENTITY", "name", "header Bcc", (OUTSIDER,))},
            id="bcc-header-name",
        ),
        pytest.param(
            plain(f"reply to {REPORTER_ADDRESS.upper()}"),
            (OUTSIDER,),
            {
                ("PROTECTED_IDENTITY", "address", "part 1 (text/plain)", (OUTSIDER,)),
                ("PROTECTED_IDENTITY", "name", "part 1 (text/plain)", (OUTSIDER,)),  # jin.park@...
            },
            id="address-in-body",
        ),
        pytest.param(
            plain("see the thread by @jpark"),
            (OUTSIDER,),
            {("PROTECTED_IDENTITY", "username", "part 1 (text/plain)", (OUTSIDER,))},
            id="username",
        ),
        pytest.param(
            plain("JP said so"),
            (OUTSIDER, OTHER_OUTSIDER),
            {("PROTECTED_IDENTITY", "alias", "part 1 (text/plain)", (OUTSIDER, OTHER_OUTSIDER))},
            id="alias-two-outsiders",
        ),
        pytest.param(
            render(
                Message(
                    body=Multipart(
                        parts=(
                            Part(body="fyi"),
                            Attached(Message(headers=with_headers(Subject="Jin Park's report"))),
                        )
                    )
                )
            ),
            (OUTSIDER,),
            {
                ("PROTECTED_IDENTITY", "name", "header Subject of the message in part 2", (OUTSIDER,)),
            },
            id="forwarded-message",
        ),
        # false-positive controls
        pytest.param(
            plain("We met in the park, near Jingle Street in Beijing."),
            (OUTSIDER,),
            set(),
            id="ordinary-prose",
        ),
        pytest.param(
            plain("Chanho Park reviewed the patch", Subject="[ports-jp] EUC-JP fix"),
            (OUTSIDER,),
            set(),
            id="surname-and-charsets",
        ),
    ],
)
def test_findings(
    raw: bytes, recipients: tuple[str, ...], expected: set[tuple[str, str, str, tuple[str, ...]]]
) -> None:
    assert summary(run(raw, *recipients)) == expected


def test_same_text_in_two_cases_gives_a_finding_per_case() -> None:
    first_name = ProtectedIdentity("stunned-bulb", "r7", IdentityKind.NAME, "Jin")
    findings = run(plain("Jin Park"), OUTSIDER, finder=IdentityMatcher.build((*IDENTITIES, first_name)))
    assert {(finding.case, finding.kind) for finding in findings} == {
        ("home-shelf", "name"),
        ("stunned-bulb", "name"),
    }


def test_consent_lifts_the_finding_for_that_recipient_only() -> None:
    findings = run(plain("Maya Lind agreed"), OUTSIDER, OTHER_OUTSIDER, consents=(consent("w1", OUTSIDER),))
    assert summary(findings) == {("PROTECTED_IDENTITY", "name", "part 1 (text/plain)", (OTHER_OUTSIDER,))}


def test_consent_matches_recipients_in_any_case() -> None:
    assert run(plain("Maya Lind agreed"), OUTSIDER.upper(), consents=(consent("w1", OUTSIDER),)) == []


def test_consent_is_per_person() -> None:
    findings = run(plain("Maya Lind and Jin Park"), OUTSIDER, consents=(consent("w1", OUTSIDER),))
    assert [finding.private_detail for finding in findings] == ['name "Jin Park"']


def test_consent_is_per_case() -> None:
    findings = run(plain("Maya Lind"), OUTSIDER, consents=(consent("w1", OUTSIDER, case="stunned-bulb"),))
    assert len(findings) == 1


def test_a_reporter_may_read_their_own_name() -> None:
    raw = plain("Dear Jin Park (JP), thank you for your report.", To=f"Jin Park <{REPORTER_ADDRESS}>")
    assert run(raw, REPORTER_ADDRESS, CONDUCT) == []


def test_a_reporter_may_not_read_a_witness_name_nor_show_theirs_to_others() -> None:
    raw = plain("Maya Lind saw it too.", To=f"Jin Park <{REPORTER_ADDRESS}>")
    assert summary(run(raw, REPORTER_ADDRESS, OUTSIDER)) == {
        ("PROTECTED_IDENTITY", "name", "part 1 (text/plain)", (REPORTER_ADDRESS, OUTSIDER)),
        ("PROTECTED_IDENTITY", "name", "header To", (OUTSIDER,)),
        ("PROTECTED_IDENTITY", "address", "header To", (OUTSIDER,)),
    }


def test_self_disclosure_can_be_turned_off() -> None:
    raw = plain("hello", To=f"Jin Park <{REPORTER_ADDRESS}>")
    findings = run(raw, REPORTER_ADDRESS, params=Params(self_disclosure=False))
    assert {finding.kind for finding in findings} == {"name", "address"}


def test_finding_reveals_nothing_but_to_the_sender() -> None:
    [finding] = run(plain(Subject="About Maya Lind"), OUTSIDER)
    assert finding.rule == "reporter-protection"
    assert finding.case == "home-shelf"
    assert "maya" not in (finding.advice + finding.where + finding.kind).lower()
    assert OUTSIDER in finding.advice
    assert "home-shelf" in finding.advice
    assert finding.private_detail == 'name "Maya Lind"'


def test_one_finding_per_person_kind_and_place() -> None:
    assert len(run(plain("Maya Lind, Maya Lind, MAYA LIND"), OUTSIDER)) == 1


def _encrypted() -> bytes:
    body = Multipart(
        subtype="encrypted",
        parts=(
            Part(content_type="application/pgp-encrypted", body="Version: 1"),
            Part(content_type="application/octet-stream", body=b"\x85"),
        ),
    )
    return render(Message(body=body))


def test_uninspectable_content_to_an_outsider() -> None:
    assert summary(run(_encrypted(), OUTSIDER, CONDUCT)) == {
        ("UNINSPECTABLE_CONTENT", "encrypted", "the message body", (OUTSIDER,))
    }


def test_uninspectable_content_inside_the_committee_is_fine() -> None:
    assert run(_encrypted(), BRAM, CONDUCT) == []


def test_consent_does_not_lift_uninspectable_content() -> None:
    findings = run(_encrypted(), OUTSIDER, consents=(consent("r1", OUTSIDER), consent("w1", OUTSIDER)))
    assert [finding.code for finding in findings] == ["UNINSPECTABLE_CONTENT"]


def test_images_count_unless_turned_off() -> None:
    image = Part(content_type="image/png", body=b"\x89PNG\x00", encoding="base64")
    raw = render(Message(body=Multipart(parts=(Part(body="hi"), image))))
    assert summary(run(raw, OUTSIDER)) == {
        ("UNINSPECTABLE_CONTENT", "media", "part 2 (image/png)", (OUTSIDER,))
    }
    assert run(raw, OUTSIDER, params=Params(media_uninspectable=False)) == []


def test_params_reject_unknown_options() -> None:
    with pytest.raises(ValueError, match="extra"):
        Params.model_validate({"unknown": 1})


def test_codes_are_documented() -> None:
    assert set(reporter_protection.CODES) == {
        "PROTECTED_IDENTITY",
        "PROTECTED_NAME_PART",
        "UNINSPECTABLE_CONTENT",
    }
    assert reporter_protection.NAME == "reporter-protection"


BODY = "part 1 (text/plain)"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # strong forms: refused like the full name
        pytest.param(
            "Lind, Maya wrote", {("PROTECTED_IDENTITY", "name", BODY, (OUTSIDER,))}, id="surname-first"
        ),
        pytest.param("Lind Maya wrote", {("PROTECTED_IDENTITY", "name", BODY, (OUTSIDER,))}, id="no-comma"),
        pytest.param("ask Mx Lind", {("PROTECTED_IDENTITY", "name", BODY, (OUTSIDER,))}, id="title"),
        pytest.param("ask Ms. Lind", {("PROTECTED_IDENTITY", "name", BODY, (OUTSIDER,))}, id="title-dot"),
        pytest.param("ask M. Lind", {("PROTECTED_IDENTITY", "name", BODY, (OUTSIDER,))}, id="initial"),
        pytest.param("by Lind, M.", {("PROTECTED_IDENTITY", "name", BODY, (OUTSIDER,))}, id="initial-after"),
        # weak forms: a lone given name or surname is held, not refused
        pytest.param("Maya said so", {("PROTECTED_NAME_PART", "name", BODY, (OUTSIDER,))}, id="given-name"),
        pytest.param("Lind's view", {("PROTECTED_NAME_PART", "name", BODY, (OUTSIDER,))}, id="possessive"),
        pytest.param(
            "Maya said so; Maya Lind agreed",
            {("PROTECTED_IDENTITY", "name", BODY, (OUTSIDER,))},
            id="weak-folded",
        ),
        # the everyday word of a person switched for it is not reported alone
        pytest.param("a walk in the park", set(), id="everyday-word"),
        pytest.param(
            "ask Mx Park", {("PROTECTED_IDENTITY", "name", BODY, (OUTSIDER,))}, id="everyday-with-title"
        ),
        pytest.param("Mayan ruins, Linden trees", set(), id="near-miss-words"),
    ],
)
def test_name_forms(text: str, expected: set[tuple[str, str, str, tuple[str, ...]]]) -> None:
    assert summary(run(plain(text), OUTSIDER, CONDUCT)) == expected


def test_weak_forms_can_be_switched_off_for_the_policy() -> None:
    assert run(plain("Maya said so"), OUTSIDER, params=Params(weak_forms=False)) == []
    assert len(run(plain("Mx Lind said so"), OUTSIDER, params=Params(weak_forms=False))) == 1


def test_weak_forms_can_be_switched_off_for_a_person() -> None:
    quiet = ProtectedIdentity("home-shelf", "w1", IdentityKind.NAME, "Maya Lind", weak_forms=False)
    finder = IdentityMatcher.build((quiet,))
    assert run(plain("Maya said so, and Lind too"), OUTSIDER, finder=finder) == []
    assert [f.code for f in run(plain("Lind, Maya"), OUTSIDER, finder=finder)] == ["PROTECTED_IDENTITY"]


def test_weak_forms_follow_consent_and_self_disclosure() -> None:
    assert run(plain("Maya said so"), OUTSIDER, consents=(consent("w1", OUTSIDER),)) == []
    assert run(plain("Dear Jin, thanks"), REPORTER_ADDRESS) == []


def test_a_weak_finding_tells_the_reviewer_why_without_the_name() -> None:
    [finding] = run(plain("Maya said so"), OUTSIDER)
    assert finding.code == "PROTECTED_NAME_PART"
    assert "given name" in finding.advice and "home-shelf" in finding.advice
    assert "may mean someone else" in finding.advice
    assert "maya" not in (finding.advice + finding.where + finding.kind).lower()
    assert finding.private_detail == 'given name "maya" of name "Maya Lind"'


def test_a_strong_finding_says_how_the_name_was_written() -> None:
    [finding] = run(plain("ask Mx Lind"), OUTSIDER)
    assert "written as: title and surname" in finding.advice
    assert finding.private_detail == 'name "Maya Lind" (written as title and surname: "lind")'
