"""reporter-protection, ``reporter_own_words``: a reporter's report quoted back to them, names included."""

from __future__ import annotations

import textwrap

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.policy.fingerprint import FingerprintIndex, ProtectedDocument, document_shingles
from gateway.policy.matcher import IdentityMatcher
from gateway.policy.mime import parse_message
from gateway.policy.model import (
    Envelope,
    Finding,
    IdentityKind,
    Mention,
    ProtectedIdentity,
    RuleContext,
)
from gateway.policy.rules import reporter_protection
from gateway.policy.rules.reporter_protection import Params

KEY = bytes(range(7, 39))
CONDUCT = "conduct@example.org"
ADA = "ada@example.org"
REPORTER = "jin.park@mail.example.net"
WITNESS = "maya.lind@witness.test"
OUTSIDER = "moderator@forum.example.net"
CASE = "home-shelf"

IDENTITIES = (
    ProtectedIdentity(CASE, "r1", IdentityKind.NAME, "Jin Park"),
    ProtectedIdentity(CASE, "r1", IdentityKind.ADDRESS, REPORTER),
    ProtectedIdentity(CASE, "w1", IdentityKind.NAME, "Maya Lind"),
    ProtectedIdentity(CASE, "w1", IdentityKind.ADDRESS, WITNESS),
    ProtectedIdentity(CASE, "w2", IdentityKind.NAME, "Sam Okonkwo"),
)
FINDER = IdentityMatcher.build(IDENTITIES)
REPORT = (
    "On Saturday evening at the social, the speaker kept putting his arm around me although I moved away "
    "twice. Maya Lind was standing next to me the whole time and saw all of it, and afterwards she walked "
    "me back to the hotel because I did not want to be alone."
)


def index(*documents: tuple[str, str, frozenset[Mention]]) -> FingerprintIndex:
    built = FingerprintIndex(KEY)
    for number, (text, author, mentions) in enumerate(documents):
        built.add(
            ProtectedDocument(
                CASE, f"doc-{number}", author, document_shingles([text], KEY), mentions=mentions
            )
        )
    return built


NAMED_MAYA = frozenset({Mention(CASE, "w1", IdentityKind.NAME)})
LEARNT = index((REPORT, "r1", NAMED_MAYA))


def quoted(text: str) -> str:
    return "\n".join("> " + line for line in textwrap.wrap(text, 66))


def reply(body: str) -> bytes:
    return (
        f"From: Ada Quill <{ADA}>\r\nTo: undisclosed-recipients:;\r\nSubject: Your report\r\n"
        "Message-ID: <a1@example.org>\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    ).encode()


def run(
    body: str,
    *recipients: str,
    fingerprints: FingerprintIndex = LEARNT,
    params: Params | None = None,
) -> list[Finding]:
    context = RuleContext(
        conduct_address=CONDUCT,
        committee=frozenset({ADA}),
        member_names=((ADA, "Ada Quill"),),
        internal_domains=frozenset({"example.org"}),
        finder=FINDER,
        consents=frozenset(),
        protected_content=fingerprints,
    )
    envelope = Envelope(mail_from=ADA, rcpt_tos=(*recipients, CONDUCT), authenticated_as=ADA)
    return reporter_protection.check(parse_message(reply(body)), envelope, context, params or Params())


QUOTE = f"Dear Jin,\n\nthank you. To be sure we understood you:\n\n{quoted(REPORT)}\n\nBest, Ada"


def test_the_report_quoted_back_to_its_author_names_the_witness_they_wrote_about() -> None:
    assert run(QUOTE, REPORTER) == []


def test_an_edited_quote_still_counts_when_the_name_is_in_an_unchanged_stretch() -> None:
    edited = REPORT.replace("twice", "two times").replace("afterwards", "afterward")
    assert run(f"You wrote:\n{quoted(edited)}", REPORTER) == []


@pytest.mark.parametrize(
    ("body", "recipients"),
    [
        pytest.param(QUOTE, (OUTSIDER,), id="same-quote-to-an-outsider"),
        pytest.param("We have spoken to Maya Lind about it.", (REPORTER,), id="name-in-our-own-words"),
        pytest.param(
            f"{QUOTE}\n\nMaya Lind confirmed it.", (REPORTER,), id="quoted-and-again-in-our-own-words"
        ),
        pytest.param(
            f"{QUOTE}\n\nSam Okonkwo saw it too.", (REPORTER,), id="a-witness-the-report-does-not-name"
        ),
        pytest.param(
            QUOTE.replace("Maya Lind was", f"Maya Lind ({WITNESS}) was"),
            (REPORTER,),
            id="an-address-the-reporter-did-not-write",
        ),
        pytest.param(
            quoted(REPORT.replace("twice. Maya Lind was", "twice. The witness Maya Lind, our chair, was")),
            (REPORTER,),
            id="the-name-in-an-edited-stretch",
        ),
    ],
)
def test_everything_else_is_still_a_finding(body: str, recipients: tuple[str, ...]) -> None:
    findings = run(body, *recipients)
    codes = {f.code for f in findings}
    # A lone given name in the same text is a weak form of the same person, reported beside it.
    assert "PROTECTED_IDENTITY" in codes and codes <= {"PROTECTED_IDENTITY", "PROTECTED_NAME_PART"}
    assert all(f.recipients == recipients for f in findings)


def test_only_the_outsider_is_concerned_when_both_receive_the_quote() -> None:
    findings = run(QUOTE, REPORTER, OUTSIDER)
    # The witness's name, and the reporter's given name ("Dear Jin"), concern the outsider only.
    assert {f.code for f in findings} == {"PROTECTED_IDENTITY", "PROTECTED_NAME_PART"}
    assert all(finding.recipients == (OUTSIDER,) for finding in findings)


def test_the_option_switches_it_off() -> None:
    (finding,) = run(QUOTE, REPORTER, params=Params(reporter_own_words=False))
    assert finding.recipients == (REPORTER,) and finding.kind == "name"


def test_a_report_that_did_not_name_the_witness_allows_nothing() -> None:
    unrecorded = index((REPORT, "r1", frozenset()))
    assert run(QUOTE, REPORTER, fingerprints=unrecorded)


def test_another_reporters_report_is_not_their_own_words() -> None:
    someone_else = index((REPORT, "r9", NAMED_MAYA))
    assert run(QUOTE, REPORTER, fingerprints=someone_else)


def test_a_name_is_not_read_across_two_pieces_of_the_report_put_side_by_side() -> None:
    report = (
        "I told everything to my friend Maya at the registration desk on the first morning of the event. "
        "Lind Street is where the hotel was, and he waited for me outside of it on Sunday evening too."
    )
    learnt = index((report, "r1", frozenset({Mention(CASE, "w1", IdentityKind.NAME)})))
    assert run(quoted(report), REPORTER, fingerprints=learnt) == []  # "Maya" and "Lind" far apart
    spliced = "I told everything to my friend Maya Lind Street is where the hotel was, and he waited for me"
    (finding,) = run(quoted(spliced), REPORTER, fingerprints=learnt)
    assert finding.kind == "name"


@given(position=st.integers(0, len(REPORT.split())), depth=st.integers(0, 2))
def test_a_person_the_report_does_not_name_is_found_wherever_it_is_slipped_in(
    position: int, depth: int
) -> None:
    words = REPORT.split()
    words.insert(position, "Sam\u00a0Okonkwo")  # kept on one line (names split by quoting: issue 12, item 2)
    body = "\n".join(">" * depth + " " + line for line in textwrap.wrap(" ".join(words), 60))
    findings = run(body, REPORTER)
    assert {(f.code, f.kind, f.recipients) for f in findings} == {("PROTECTED_IDENTITY", "name", (REPORTER,))}
