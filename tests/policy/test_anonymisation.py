"""anonymisation: precise timestamps, gendered words and quoted protected content, never the text itself."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import ConfigError
from gateway.policy.loader import parse_policy_text
from gateway.policy.matcher import IdentityMatcher
from gateway.policy.mime import parse_message
from gateway.policy.model import ContentOverlap, Envelope, Finding, RuleContext
from gateway.policy.normalize import normalize
from gateway.policy.rules import anonymisation
from gateway.policy.rules.anonymisation import Params, split_body, split_quoted
from tests.policy.builders import Attached, Message, Multipart, Part, plain, render, with_headers

ADA = "ada@example.org"
MOD = "mods@forum.example.net"
ENVELOPE = Envelope(mail_from=ADA, rcpt_tos=(MOD,), authenticated_as=ADA)
REPORT = (
    "At the social on the second evening the person kept asking where I was staying and followed me "
    "to the lift even after I said I wanted to be left alone"
)


@dataclass(frozen=True)
class FakeFingerprints:
    """Knows one protected document: reports the longest run of its words that ``text`` repeats."""

    document: str = REPORT
    case: str = "home shelf"

    def overlaps(self, text: str) -> list[ContentOverlap]:
        words, known = normalize(text).split(), normalize(self.document).split()
        best = 0
        for start in range(len(words)):
            for offset in range(len(known)):
                run = 0
                while (
                    start + run < len(words)
                    and offset + run < len(known)
                    and words[start + run] == known[offset + run]
                ):
                    run += 1
                best = max(best, run)
        if best < 8:
            return []
        return [ContentOverlap(self.case, "doc-1", best - 7, best / len(known), best, "quiet-heron")]


def context(fingerprints: FakeFingerprints | None = None) -> RuleContext:
    base = RuleContext(
        conduct_address="conduct@example.org",
        committee=frozenset({ADA}),
        member_names=(),
        internal_domains=frozenset(),
        finder=IdentityMatcher.build(()),
        consents=frozenset(),
    )
    if fingerprints is None:
        return base
    return RuleContext(**{**vars(base), "protected_content": fingerprints})


def check(
    raw: bytes, params: Params | None = None, fingerprints: FakeFingerprints | None = None
) -> list[Finding]:
    return anonymisation.check(parse_message(raw), ENVELOPE, context(fingerprints), params or Params())


def codes(findings: list[Finding]) -> list[tuple[str, str]]:
    return sorted((f.code, f.kind) for f in findings)


# --- timestamps ---------------------------------------------------------------------------------

TIMESTAMPS = [
    ("We spoke at 14:32 that day.", "14:32"),
    ("It happened around 9pm.", "9pm"),
    ("It happened around 9 PM.", "9 pm"),
    ("They left at 9:15 a.m. sharp.", "9:15 a.m."),
    ("They left at 9.15pm.", "9.15pm"),
    ("by ten o'clock", "o'clock"),
    ("at 09:05:59", "09:05:59"),
    ("On Tuesday 3 March the talk ran late.", "tuesday 3 march"),
    ("Tue, 3 Mar 2025", "tue, 3 mar"),
    ("on Friday the 3rd of March", "friday the 3rd of march"),
    ("Tuesday, March 3rd", "tuesday, march 3rd"),
    ("on Tuesday 2025-03-04", "tuesday 2025-03-04"),
    ("on Tue 3/3/25", "tue 3/3/25"),
    ("on 2025-03-04 at 10:00", "2025-03-04 at 10:00"),
    ("2025-03-04T10:00:00Z", "2025-03-04t10:00:00"),
    ("on 3 March at 10 they", "3 march at 10"),
    ("on March 3rd, 2025 at 9", "march 3rd, 2025 at 9"),
    ("We spoke at 14:\n32?", None),  # a time broken by a line break is not a time
    ("the TUESDAY\n3 MARCH session", "tuesday 3 march"),  # across a line break, any case
]
NOT_TIMESTAMPS = [
    "Please upgrade to version 3.14 first.",
    "The vote was 2:1 in favour.",
    "A 16:9 screen.",
    "Call +44 20 7946 0958 or 555-0100.",
    "9 people attended; 12 left early.",
    "On 3 March the committee met.",  # a date alone
    "Sometime in early March, on a Tuesday evening.",
    "Python 3.11 at 9 workshops.",
    "The MAC is 12:34:56:78:9a:bc.",
    "I am sure; sent 5 PMs.",
    "Section 4.2 at 10 pages.",
    "Mon 7 items",
]


@pytest.mark.parametrize(("body", "matched"), [pytest.param(b, m, id=b[:30]) for b, m in TIMESTAMPS])
def test_timestamps_found(body: str, matched: str | None) -> None:
    found = [f for f in check(plain(body)) if f.code == "PRECISE_TIMESTAMP"]
    if matched is None:
        assert found == []
        return
    (finding,) = found
    assert (finding.where, finding.kind) == ("part 1 (text/plain)", "timestamp")
    assert f'"{matched}"' in finding.private_detail
    assert matched not in finding.advice.lower()
    assert "an evening in early March" in finding.advice


@pytest.mark.parametrize("body", [pytest.param(b, id=b[:30]) for b in NOT_TIMESTAMPS])
def test_not_timestamps(body: str) -> None:
    assert check(plain(body)) == []


def test_message_headers_are_not_read_but_the_subject_is() -> None:
    # Every message has a Date header with a time: that is not something the sender wrote.
    assert check(plain("Hello.", Date="Tue, 03 Mar 2025 14:32:00 +0000")) == []
    (finding,) = check(plain("Hello.", Subject="Incident on Tuesday 3 March"))
    assert (finding.code, finding.where) == ("PRECISE_TIMESTAMP", "header Subject")


def test_html_is_read_as_rendered() -> None:
    html = "<html><body><p>It was at <b>14</b>:<i>32</i> in the hall.</p></body></html>"
    raw = render(Message(body=Part(content_type="text/html", body=html)))
    (finding,) = check(raw)
    assert (finding.code, finding.where) == ("PRECISE_TIMESTAMP", "part 1 (text/html)")


def test_encoded_parts_are_read() -> None:
    raw = render(Message(body=Part(body="Vers 21:45 ils sont partis. Tuesday 3 March.", encoding="base64")))
    assert b"21:45" not in raw
    assert codes(check(raw)) == [("PRECISE_TIMESTAMP", "timestamp")]


QUOTED_REPLIES = [
    pytest.param("Thank you.\n\n> It started at 21:45.\n", id="quote-marks"),
    pytest.param(
        "Thank you.\n\nOn Tue, 3 Mar 2025 at 14:32, Pat <pat@example.com> wrote:\n> Hi\n", id="attribution"
    ),
    pytest.param(
        "Thank you.\n\nOn Tue, Mar 3, 2025 at 2:32 PM Pat <pat@example.com>\nwrote:\n> Hi\n", id="two-lines"
    ),
    pytest.param("Thanks.\n\nAm Dienstag, 3. März 2025 um 14:32 schrieb Pat:\n> Hallo\n", id="german-client"),
    pytest.param(
        "FYI\n\n---------- Forwarded message ---------\nFrom: Pat\nDate: Tue, 3 Mar 2025\nSubject: x\n\nhi\n",
        id="forwarded-inline",
    ),
    pytest.param("FYI\n\nFrom: Pat\nSent: Tuesday, March 3, 2025 2:32 PM\nTo: x\n\nhi\n", id="outlook-block"),
]


@pytest.mark.parametrize("body", QUOTED_REPLIES)
def test_times_in_quoted_text_are_reported_as_quoted(body: str) -> None:
    (finding,) = check(plain(body))
    assert (finding.code, finding.kind) == ("PRECISE_TIMESTAMP", "quoted")
    assert "do not forward threads" in finding.advice


def test_attached_message_date_is_read() -> None:
    inner = Message(headers=with_headers(Date="Tue, 03 Mar 2025 14:32:00 +0000"), body=Part(body="hi"))
    raw = render(Message(body=Multipart(parts=(Part(body="See below."), Attached(inner)))))
    (finding,) = check(raw)
    assert (finding.code, finding.kind) == ("PRECISE_TIMESTAMP", "quoted")
    assert finding.where == "header Date of the message in part 2"


def test_patterns_are_configurable_and_validated() -> None:
    params = Params(timestamp_patterns=(r"\bum [0-9]{1,2} uhr\b",))
    assert codes(check(plain("Es war um 9 Uhr."), params)) == [("PRECISE_TIMESTAMP", "timestamp")]
    assert check(plain("At 14:32."), params) == []
    with pytest.raises(ValueError, match="entry 1 is not a valid regular expression"):
        Params(timestamp_patterns=("ok", "(unclosed"))


# --- gendered language --------------------------------------------------------------------------

GENDERED = [
    ("He said it twice.", '"he"'),
    ("She's new here.", '"she"'),
    ("We spoke to her on the stairs.", '"her"'),
    ("The bag was hers.", '"hers"'),
    ("HE\nSAID", '"he"'),
    ("Dear Mr. Example", '"mr"'),
    ("a woman in the audience", '"woman"'),
    ("the guy at the desk", '"guy"'),
    ("he hurt himself", '"he", "himself"'),
]
NOT_GENDERED = [
    "Herbert, the shell script and others.",
    "They said it twice; the person was new.",
    "The hershey bar, ethernet, shepherd, manual, womanhood-free",
    "Theirs, mankind, this, whisper, ahem",
    "It took 200 ms.",
]


@pytest.mark.parametrize(("body", "detail"), [pytest.param(b, d, id=b[:20]) for b, d in GENDERED])
def test_gendered_terms(body: str, detail: str) -> None:
    (finding,) = check(plain(body))
    assert (finding.code, finding.kind, finding.private_detail) == (
        "GENDERED_LANGUAGE",
        "gendered-term",
        detail,
    )
    assert "they/them" in finding.advice
    assert "unless gender is relevant" in finding.advice


@pytest.mark.parametrize("body", NOT_GENDERED)
def test_not_gendered(body: str) -> None:
    assert check(plain(body)) == []


def test_gendered_terms_are_configurable() -> None:
    params = Params(gendered_terms=("sie", "er"), timestamp_patterns=())
    assert codes(check(plain("Sie sagte, er kam."), params)) == [("GENDERED_LANGUAGE", "gendered-term")]
    assert check(plain("He said."), params) == []
    assert check(plain("He said."), Params(gendered_terms=())) == []


def test_one_finding_per_place() -> None:
    html = "<p>She said he was there at 21:45.</p>"
    raw = render(
        Message(
            body=Multipart(
                subtype="alternative",
                parts=(
                    Part(body="She said he was there at 21:45."),
                    Part(content_type="text/html", body=html),
                ),
            )
        )
    )
    assert sorted((f.code, f.where) for f in check(raw)) == [
        ("GENDERED_LANGUAGE", "part 1 (text/plain)"),
        ("GENDERED_LANGUAGE", "part 2 (text/html)"),
        ("PRECISE_TIMESTAMP", "part 1 (text/plain)"),
        ("PRECISE_TIMESTAMP", "part 2 (text/html)"),
    ]


# --- quoted protected content -------------------------------------------------------------------


def quoted(text: str, width: int = 40) -> str:
    lines, line = [], ""
    for word in text.split():
        if len(line) + len(word) > width:
            lines.append(line)
            line = ""
        line = f"{line} {word}".strip()
    return "\n".join(f"> {item}" for item in [*lines, line])


def test_quoted_report_is_found_without_quoting_it() -> None:
    body = f"We looked into this.\n\nOn the 3rd, R. wrote:\n{quoted(REPORT)}\n"
    findings = check(plain(body), fingerprints=FakeFingerprints())
    (finding,) = [f for f in findings if f.code == "REPORTER_WORDS_QUOTED"]
    assert (finding.kind, finding.case, finding.where) == ("quoted", "home shelf", "part 1 (text/plain)")
    assert "your own words" in finding.advice
    assert "lift" not in finding.advice and "lift" not in finding.private_detail


def test_quoted_report_in_html_after_an_attribution_line() -> None:
    html = f"<div>We looked into this.</div><div>On Monday, R. wrote:</div><blockquote>{REPORT}</blockquote>"
    raw = render(Message(body=Part(content_type="text/html", body=html, encoding="quoted-printable")))
    assert codes(check(raw, fingerprints=FakeFingerprints())) == [("REPORTER_WORDS_QUOTED", "quoted")]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(f"> {REPORT[:40]}\n", id="short-quote"),
        pytest.param("> Thank you for your message, we will get back to you soon.\n", id="unrelated"),
        pytest.param(f"{REPORT}\n", id="not-quoted: the protected-content rule's job"),
    ],
)
def test_quotes_not_reported(body: str) -> None:
    assert [
        f for f in check(plain(body), fingerprints=FakeFingerprints()) if f.code == "REPORTER_WORDS_QUOTED"
    ] == []


def test_quote_thresholds() -> None:
    body = quoted(REPORT[:120])  # about 24 words
    assert check(plain(body), fingerprints=FakeFingerprints()) != []
    assert check(plain(body), Params(quote_min_words=30, quote_min_fraction=0.9), FakeFingerprints()) == []
    assert check(plain(body), Params(check_quotes=False), FakeFingerprints()) == []


def test_without_fingerprints_nothing_is_quoted() -> None:
    assert check(plain(quoted(REPORT))) == []


# --- splitting own words from quoted text --------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "own", "quoted_text"),
    [
        pytest.param("a\n> b\n>> c\nd", "a\nd", "b\nc", id="inline-reply"),
        pytest.param(
            "a\nOn Mon, X wrote:\nb\nc", "a", "On Mon, X wrote:\nb\nc", id="unmarked-after-attribution"
        ),
        pytest.param(
            "a\nOn Mon, X wrote:\n> b\nd", "a\nd", "On Mon, X wrote:\nb", id="marked-after-attribution"
        ),
        pytest.param(
            "On Monday we met.\nIt went well.", "On Monday we met.\nIt went well.", "", id="not-attribution"
        ),
        pytest.param(
            "a\n-----Original Message-----\nb", "a", "-----Original Message-----\nb", id="separator"
        ),
    ],
)
def test_split_quoted(text: str, own: str, quoted_text: str) -> None:
    assert split_quoted(text) == (own, quoted_text)


def _split_quoted_line_by_line(text: str) -> tuple[str, str]:
    """split_quoted as first written: every check on every line, no shortcut."""
    lines = text.splitlines()
    own: list[str] = []
    quoted: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        attribution = anonymisation._attribution_length(lines, index)
        if (
            attribution
            or anonymisation._FORWARD_SEPARATOR.match(line)
            or anonymisation._header_block(lines, index)
        ):
            quoted.extend(lines[index : index + attribution])
            rest = lines[index + attribution :]
            following = next((item for item in rest if item.strip()), "")
            if attribution and anonymisation._QUOTE_MARK.match(following):
                index += attribution
                continue
            quoted.extend(anonymisation._QUOTE_MARKS.sub("", item) for item in rest)
            break
        if anonymisation._QUOTE_MARK.match(line):
            quoted.append(anonymisation._QUOTE_MARKS.sub("", line))
        else:
            own.append(line)
        index += 1
    return "\n".join(own), "\n".join(quoted)


# Lines built from the pieces the quote checks look for, in any case, joined by any line break.
_QUOTE_PIECES = st.sampled_from(
    (
        "> ",
        ">",
        " \t>",
        "On Mon, X wrote:",
        "on",
        "ON ",
        "Am 3. März schrieb Y:",
        "le",
        "El",
        "il",
        "İl",
        "ıl",
        "wrote:",
        "a écrit :",
        "--",
        "-----Original Message-----",
        "_" * 10,
        "Begin forwarded message:",
        "From:",
        "from :",
        "Sent: today",
        "Subject: x",
        "\u00a0",
        " ",
        "\t",
        "text",
        "Once",
        "x",
    )
)
_QUOTE_LINE_BREAKS = st.sampled_from(("\n", "\r\n", "\r", "\x0b", "\x1c", "\x85", "\u2028"))
_MAIL_LIKE_TEXT = st.lists(
    st.tuples(st.lists(_QUOTE_PIECES | st.text(max_size=3), max_size=4).map("".join), _QUOTE_LINE_BREAKS),
    max_size=8,
).map(lambda lines: "".join(line + end for line, end in lines))


@settings(max_examples=500, deadline=None)
@given(_MAIL_LIKE_TEXT)
def test_split_quoted_agrees_with_checking_every_line(text: str) -> None:
    assert split_quoted(text) == _split_quoted_line_by_line(text)


@settings(max_examples=300, deadline=None)
@given(_MAIL_LIKE_TEXT)
def test_split_body_says_when_every_line_is_own(text: str) -> None:
    split = split_body(text)
    assert split.quotes_nothing == (split.own == "\n".join(text.splitlines()) and not split.quoted)


def test_policy_errors_for_bad_patterns_name_line_and_key() -> None:
    text = (
        "organisation:\n  conduct_address: c@example.org\n  members:\n    - name: Ada Quill\n"
        "      addresses: [ada@example.org]\nrules:\n  - rule: anonymisation\n    action: hold\n"
        "    params:\n      timestamp_patterns: ['[0-9']\n"
    )
    with pytest.raises(
        ConfigError, match=r"line 10, key rules\[0\]\.params\.timestamp_patterns: .*not a valid"
    ):
        parse_policy_text(text, Path("p.yaml"))
