"""protected-content: a reporter's own words, in any part and encoding, never reach an outsider."""

from __future__ import annotations

import base64
import quopri
import textwrap
from pathlib import Path

import pytest

from gateway.policy.engine import CompiledPolicy, compile_policy, evaluate
from gateway.policy.fingerprint import FingerprintIndex, ProtectedDocument, document_shingles
from gateway.policy.loader import parse_policy_text
from gateway.policy.mime import parse_message
from gateway.policy.model import Envelope, Outcome, ThreadFacts, Verdict

KEY = bytes(range(1, 33))
ADA = "ada@example.org"
CONDUCT = "conduct@example.org"
OUTSIDER = "mods@forum.example.com"
REPORTER = "robin@mail.example.net"
WITNESS = "sam@witness.test"
REPORT = (
    "On the second evening of the sprint he followed me from the venue to the tram stop, kept asking "
    "which hotel I was staying in, and when I said I would rather not tell him he laughed and said he "
    "would find out anyway because the organisers always book the same place for speakers."
)


def policy_text(params: str = "", consent: bool = False) -> str:
    consents = (
        f"""
    consents:
      - person: quiet-heron
        recipient: {OUTSIDER}
        reference: mail of 2024-03-02
        date: 2024-03-02"""
        if consent
        else ""
    )
    return (
        textwrap.dedent(
            f"""\
        organisation:
          conduct_address: {CONDUCT}
          members:
            - name: Ada Quill
              addresses: [{ADA}]
        rules:
          - rule: protected-content
            action: reject
            params: {{{params}}}
        cases:
          - code: home shelf
            reporters:
              - id: quiet-heron
                names: [Robin Castellano]
                addresses: [{REPORTER}]
            witnesses:
              - id: amber-finch
                names: [Sam Okonkwo]
                addresses: [{WITNESS}]"""
        )
        + consents
    )


def compiled(params: str = "", consent: bool = False) -> CompiledPolicy:
    text = policy_text(params, consent)
    return compile_policy(parse_policy_text(text, Path("test.yaml")), text.encode())


@pytest.fixture(scope="module")
def index() -> FingerprintIndex:
    built = FingerprintIndex(KEY)
    built.add(ProtectedDocument("home shelf", "report-1", "quiet-heron", document_shingles([REPORT], KEY)))
    return built


def mail(body: bytes, content_type: str = "text/plain; charset=utf-8", headers: str = "") -> bytes:
    head = (
        f"From: Ada Quill <{ADA}>\r\nTo: Moderators <{OUTSIDER}>\r\nCc: {CONDUCT}\r\n"
        "Subject: Follow-up\r\nMessage-ID: <m1@example.org>\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: {content_type}\r\n{headers}\r\n"
    )
    return head.encode() + body


def wrapped(text: str, width: int = 60, prefix: str = "") -> str:
    return "\r\n".join(prefix + line for line in textwrap.wrap(text, width))


def multipart(*parts: tuple[str, bytes]) -> bytes:
    body = b"".join(b"--B\r\n" + head.encode() + b"\r\n\r\n" + content + b"\r\n" for head, content in parts)
    return mail(body + b"--B--\r\n", 'multipart/mixed; boundary="B"')


def verdict(
    raw: bytes,
    index: FingerprintIndex,
    rcpt_tos: tuple[str, ...] = (OUTSIDER, CONDUCT),
    policy: CompiledPolicy | None = None,
) -> Verdict:
    envelope = Envelope(mail_from=ADA, rcpt_tos=rcpt_tos, authenticated_as=ADA)
    return evaluate(
        parse_message(raw), envelope, policy or compiled(), ThreadFacts(), protected_content=index
    )


HTML = (
    f"<html><body><p>Hello,</p><blockquote><p>{REPORT[:120]}</p><p>{REPORT[120:]}</p></blockquote>"
    "</body></html>"
)
FORWARDED = (
    f"From: Robin <{REPORTER}>\r\nTo: {CONDUCT}\r\nSubject: what happened\r\n"
    "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    + base64.encodebytes(wrapped(REPORT, 70).encode()).decode().replace("\n", "\r\n")
)

COPIES = [
    pytest.param(mail(REPORT.encode()), id="verbatim"),
    pytest.param(mail(wrapped(REPORT, 38).encode()), id="reflowed"),
    pytest.param(mail(("Hi,\r\n\r\n" + wrapped(REPORT, 64, "> ")).encode()), id="quoted"),
    pytest.param(mail(("Hi,\r\n\r\n" + wrapped(REPORT, 50, "> > ")).encode()), id="quoted-twice"),
    pytest.param(mail(HTML.encode(), "text/html; charset=utf-8"), id="html"),
    pytest.param(
        mail(base64.encodebytes(REPORT.encode("utf-8")), headers="Content-Transfer-Encoding: base64\r\n"),
        id="base64",
    ),
    pytest.param(
        mail(
            quopri.encodestring(REPORT.replace("hotel", "hôtel").encode("utf-8")),
            headers="Content-Transfer-Encoding: quoted-printable\r\n",
        ),
        id="quoted-printable",
    ),
    pytest.param(
        multipart(
            ("Content-Type: text/plain", b"See the attached."),
            ("Content-Type: message/rfc822", FORWARDED.encode()),
        ),
        id="forwarded-attachment",
    ),
    pytest.param(
        multipart(
            ("Content-Type: text/plain", b"Notes attached."),
            (
                'Content-Type: text/plain; name="notes.txt"\r\n'
                'Content-Disposition: attachment; filename="notes.txt"',
                wrapped(REPORT, 70).encode(),
            ),
        ),
        id="text-attachment",
    ),
]


@pytest.mark.parametrize("raw", COPIES)
def test_copies_to_an_outsider_are_refused(raw: bytes, index: FingerprintIndex) -> None:
    result = verdict(raw, index)
    assert result.outcome is Outcome.REJECT
    (decision,) = result.decisions
    finding = decision.finding
    assert (finding.rule, finding.code, finding.case) == (
        "protected-content",
        "PROTECTED_CONTENT",
        "home shelf",
    )
    assert finding.recipients == (OUTSIDER,)
    assert "case home shelf" in finding.advice and "in your own words" in finding.advice
    assert "tram stop" not in finding.advice  # never the words themselves


def test_the_finding_says_how_much_and_where(index: FingerprintIndex) -> None:
    passage = " ".join(REPORT.split()[5:25])
    (decision,) = verdict(mail(f"In short: {passage}.".encode()), index).decisions
    assert decision.finding.where.startswith("part")
    assert "repeats 20 words (" in decision.finding.advice


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(
            "Thank you for your message. Please let me know if you have any questions.", id="common"
        ),
        pytest.param("He kept asking which hotel I was staying in, they say.", id="shared-6-words"),
        pytest.param(" ".join(REPORT.split()[:11]), id="11-words"),
        pytest.param("The committee agreed on the travel grants at its Thursday meeting.", id="unrelated"),
    ],
)
def test_short_phrases_and_unrelated_text_pass(body: str, index: FingerprintIndex) -> None:
    assert verdict(mail(body.encode()), index).outcome is Outcome.DELIVER


def test_committee_only_mail_may_quote_the_report(index: FingerprintIndex) -> None:
    assert verdict(mail(REPORT.encode()), index, rcpt_tos=(CONDUCT, ADA)).outcome is Outcome.DELIVER


def test_a_reporter_may_be_quoted_back_to_themselves_only(index: FingerprintIndex) -> None:
    raw = mail(wrapped(REPORT, 60, "> ").encode())
    assert verdict(raw, index, rcpt_tos=(REPORTER, CONDUCT)).outcome is Outcome.DELIVER
    assert verdict(raw, index, rcpt_tos=(WITNESS, CONDUCT)).outcome is Outcome.REJECT
    strict = compiled("self_disclosure: false")
    assert verdict(raw, index, rcpt_tos=(REPORTER, CONDUCT), policy=strict).outcome is Outcome.REJECT
    both = verdict(raw, index, rcpt_tos=(REPORTER, OUTSIDER, CONDUCT))
    assert both.outcome is Outcome.REJECT and both.decisions[0].finding.recipients == (OUTSIDER,)


def test_consent_to_be_named_lifts_it_only_when_configured(index: FingerprintIndex) -> None:
    raw = mail(REPORT.encode())
    assert verdict(raw, index, policy=compiled(consent=True)).outcome is Outcome.REJECT
    lifted = compiled("consent_lifts: true", consent=True)
    assert verdict(raw, index, policy=lifted).outcome is Outcome.DELIVER
    assert verdict(raw, index, rcpt_tos=("other@example.com",), policy=lifted).outcome is Outcome.REJECT


def test_thresholds_are_configurable(index: FingerprintIndex) -> None:
    report = REPORT.split()
    passage = mail(" ".join(report[:15]).encode())  # 15 words: about a quarter of the report
    assert verdict(passage, index).outcome is Outcome.REJECT
    exact_only = "min_run_words: 20, passage_words: 20"
    assert verdict(passage, index, policy=compiled(exact_only)).outcome is Outcome.DELIVER
    # One word in six changed: no 12-word run and no 8-word piece, but an edited copy.
    edited = mail(" ".join(w if n % 6 != 5 else "zebra" for n, w in enumerate(report)).encode())
    assert verdict(edited, index).outcome is Outcome.REJECT
    assert verdict(edited, index, policy=compiled("min_share: 1")).outcome is Outcome.DELIVER
    # 8-word pieces apart: less than 75% of any 16 words, but about 60% of the report.
    filler = " otters juggle quietly near lighthouse ferries "
    pieces = filler.join(" ".join(report[i : i + 8]) for i in range(0, 56, 8))
    assert verdict(mail(pieces.encode()), index).outcome is Outcome.REJECT
    stricter = compiled("min_fraction: 0.9")
    assert verdict(mail(pieces.encode()), index, policy=stricter).outcome is Outcome.DELIVER


@pytest.mark.parametrize(
    ("every", "outcome"),
    [
        pytest.param(6, Outcome.REJECT, id="one-word-in-six-changed-is-caught"),
        pytest.param(5, Outcome.DELIVER, id="one-word-in-five-changed-is-not"),
        pytest.param(4, Outcome.DELIVER, id="one-word-in-four-changed-is-not"),
    ],
)
def test_how_much_rewording_hides_a_copy(every: int, outcome: Outcome, index: FingerprintIndex) -> None:
    reworded = " ".join(w if n % every != every - 1 else "zebra" for n, w in enumerate(REPORT.split()))
    assert verdict(mail(reworded.encode()), index).outcome is outcome


def test_spelling_variants_and_typos_do_not_hide_a_copy(index: FingerprintIndex) -> None:
    american = REPORT.replace("organisers", "organizers").replace("hotel", "hotle")
    assert verdict(mail(american.encode()), index).outcome is Outcome.REJECT
    assert verdict(mail(american.encode()), index, rcpt_tos=(REPORTER,)).outcome is Outcome.DELIVER


def test_without_fingerprints_nothing_is_found() -> None:
    envelope = Envelope(mail_from=ADA, rcpt_tos=(OUTSIDER,), authenticated_as=ADA)
    result = evaluate(parse_message(mail(REPORT.encode())), envelope, compiled(), ThreadFacts())
    assert result.outcome is Outcome.DELIVER
