"""code-names: a protected person's real name in a Subject or a file name is flagged on any mail."""

from __future__ import annotations

import dataclasses

import pytest

from gateway.policy.matcher import IdentityMatcher
from gateway.policy.mime import parse_message
from gateway.policy.model import Envelope, Finding, IdentityKind, ProtectedIdentity, RuleContext
from gateway.policy.rules import code_names
from gateway.policy.rules.code_names import Params
from tests.policy.builders import Message, Multipart, Part, encoded_word, plain, render, with_headers

CONDUCT = "conduct@example.org"
ADA = "ada@example.org"
BRAM = "bram@example.org"
OUTSIDER = "moderator@forum.example.net"

IDENTITIES = (
    ProtectedIdentity("home shelf", "quiet-heron", IdentityKind.NAME, "Jin Park"),
    ProtectedIdentity("home shelf", "quiet-heron", IdentityKind.ALIAS, "Jinny"),
    ProtectedIdentity("home shelf", "quiet-heron", IdentityKind.ADDRESS, "jin.park@mail.example.net"),
    ProtectedIdentity("home shelf", "quiet-heron", IdentityKind.USERNAME, "jpark"),
    ProtectedIdentity("stunned bulb", "amber-finch", IdentityKind.NAME, "Maya Lind"),
)
CONTEXT = RuleContext(
    conduct_address=CONDUCT,
    committee=frozenset({ADA, BRAM}),
    member_names=((ADA, "Ada Quill"), (BRAM, "Bram Oduya")),
    internal_domains=frozenset({"example.org"}),
    finder=IdentityMatcher.build(IDENTITIES),
    consents=frozenset(),
)
COMMITTEE_ONLY = Envelope(mail_from=ADA, rcpt_tos=(BRAM, CONDUCT), authenticated_as=ADA)
TO_OUTSIDER = Envelope(mail_from=ADA, rcpt_tos=(OUTSIDER, CONDUCT), authenticated_as=ADA)


def run(raw: bytes, envelope: Envelope = COMMITTEE_ONLY, params: Params | None = None) -> list[Finding]:
    return code_names.check(parse_message(raw), envelope, CONTEXT, params or Params())


def attachment(filename: str, style: str = "plain") -> bytes:
    body = Multipart(
        parts=(
            Part(body="See the attached notes."),
            Part(content_type="text/plain", body="notes", filename=filename, filename_style=style),
        )
    )
    return render(Message(headers=with_headers(Subject="Notes"), body=body))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(plain(Subject="About Jin Park"), [("REAL_NAME_IN_SUBJECT", "name")], id="subject-name"),
        pytest.param(
            plain(Subject="Re: Jinny again"), [("REAL_NAME_IN_SUBJECT", "alias")], id="subject-alias"
        ),
        pytest.param(
            plain(Subject=encoded_word("Réponse: Jin Park")),
            [("REAL_NAME_IN_SUBJECT", "name")],
            id="subject-encoded-word",
        ),
        pytest.param(
            plain(Subject=f"{encoded_word('Re:w1', encoding='Q')} {encoded_word('Jin Park', encoding='Q')}"),
            [("REAL_NAME_IN_SUBJECT", "name")],
            id="subject-glued-by-encoded-words",
        ),
        pytest.param(
            plain(Subject="About J\u200bin P\u0430rk"),  # zero-width space, Cyrillic a
            [("REAL_NAME_IN_SUBJECT", "name")],
            id="subject-look-alike",
        ),
        pytest.param(attachment("Jin_Park notes.txt"), [("REAL_NAME_IN_FILENAME", "name")], id="filename"),
        pytest.param(
            attachment("Maya Lind statement.txt", style="2231"),
            [("REAL_NAME_IN_FILENAME", "name")],
            id="filename-rfc2231",
        ),
        pytest.param(plain(Subject="Case home shelf: quiet-heron"), [], id="code-names-only"),
        pytest.param(plain(Subject="Jingle bells at the party"), [], id="word-boundary"),
        pytest.param(plain(Subject="Park meeting"), [], id="surname-alone"),
        pytest.param(plain(Subject="From jpark"), [], id="username-not-a-name-by-default"),
        pytest.param(plain("Jin Park wrote again.", Subject="Minutes"), [], id="body-not-checked"),
    ],
)
def test_findings(raw: bytes, expected: list[tuple[str, str]]) -> None:
    assert [(f.code, f.kind) for f in run(raw)] == expected


def test_inside_the_committee_and_to_outsiders_alike() -> None:
    raw = plain(Subject="About Jin Park")
    assert [f.code for f in run(raw, COMMITTEE_ONLY)] == ["REAL_NAME_IN_SUBJECT"]
    assert [f.code for f in run(raw, TO_OUTSIDER)] == ["REAL_NAME_IN_SUBJECT"]


def test_advice_suggests_code_names_and_never_quotes_the_name() -> None:
    [finding] = run(plain(Subject="About Jin Park"))
    assert finding.case == "home shelf" and finding.rule == "code-names"
    assert '"home shelf"' in finding.advice and '"quiet-heron"' in finding.advice
    assert "Jin" not in finding.advice and "Jin" not in finding.where
    assert finding.private_detail == 'name "Jin Park"'  # shown by `check` only


def test_filename_advice_names_the_part() -> None:
    [finding] = run(attachment("Jin_Park notes.txt"))
    assert finding.advice.startswith("The file name of part 2")
    assert "Jin" not in finding.advice


@pytest.mark.parametrize(
    ("params", "raw", "codes"),
    [
        pytest.param(Params(subject=False), plain(Subject="About Jin Park"), [], id="subject-off"),
        pytest.param(Params(filenames=False), attachment("Jin Park.txt"), [], id="filenames-off"),
        pytest.param(
            Params(kinds=("name", "alias", "username")),
            plain(Subject="From jpark"),
            ["REAL_NAME_IN_SUBJECT"],
            id="usernames-on",
        ),
    ],
)
def test_options(params: Params, raw: bytes, codes: list[str]) -> None:
    assert [f.code for f in run(raw, params=params)] == codes


def test_no_suggestion_when_switched_off() -> None:
    [finding] = run(plain(Subject="About Jin Park"), params=Params(suggest=False))
    assert "quiet-heron" not in finding.advice


def test_one_finding_per_person_and_place() -> None:
    findings = run(plain(Subject="Jin Park (Jinny) and Maya Lind"))
    assert sorted((f.case, f.kind) for f in findings) == [("home shelf", "name"), ("stunned bulb", "name")]


def test_a_sender_with_a_conflict_of_interest_is_not_told_the_case() -> None:
    """Conflicted members must not see a case's details: the advice then names no case or person."""
    conflicted = dataclasses.replace(CONTEXT, conflicts={"home shelf": frozenset({ADA})})
    raw = plain(Subject="About Jin Park")

    [finding] = code_names.check(parse_message(raw), COMMITTEE_ONLY, conflicted, Params())
    [unconflicted] = run(raw)

    assert "home shelf" in unconflicted.advice and "quiet-heron" in unconflicted.advice
    assert "home shelf" not in finding.advice and "quiet-heron" not in finding.advice
    assert finding.code == "REAL_NAME_IN_SUBJECT"
