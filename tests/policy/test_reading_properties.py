"""Property: a protected full name is found however quoting, layout or encoded-words split it.

Hypothesis writes a paragraph that names a protected person, wraps it at a random column (or breaks
the line between the name's words, hyphenates one of its words across the break, or leaves quote
markers between its words as a client re-wrapping quoted text does), quotes each
line at a random depth and style (``>``, ``> >``, ``>>``, ``|``, ``＞``, ``NH>``, spaced or not,
trailing spaces), and sends it as plain text (any transfer encoding,
format=flowed or not) or as HTML (the quote markers escaped, the lines joined by ``<br>``, ``<p>``,
``<div>``, table cells of one row, ``<blockquote>`` or ``<span>`` s). Or it puts the name in a header
glued to the words around it and cuts the header into adjacent encoded-words at random places (at
the name's glued edges and anywhere else). Sent to an outsider, reporter-protection must report
the person. Controls: halves of a name in different quoted paragraphs, or with other words between
them, are not reported.
"""

from __future__ import annotations

import html
import itertools
import textwrap

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.policy.matcher import IdentityMatcher
from gateway.policy.mime import parse_message
from gateway.policy.model import Envelope, IdentityKind, ProtectedIdentity, RuleContext
from gateway.policy.rules import reporter_protection
from tests.policy.builders import DEFAULT_HEADERS, Message, Part, encoded_word, render

PEOPLE = (
    ProtectedIdentity("home-shelf", "w1", IdentityKind.NAME, "Noor Haddad"),
    ProtectedIdentity("home-shelf", "r1", IdentityKind.NAME, "Zoë Müller"),
    ProtectedIdentity("stunned-bulb", "r1", IdentityKind.NAME, "Ana María López"),
)
CONTEXT = RuleContext(
    conduct_address="conduct@example.org",
    committee=frozenset({"ada@example.org"}),
    member_names=(),
    internal_domains=frozenset(),
    finder=IdentityMatcher.build(PEOPLE),
    consents=frozenset(),
)
OUTSIDE = Envelope("ada@example.org", ("mod@forum.example.net",), "ada@example.org")

FILLER = ("the", "venue", "staff", "said", "that", "our", "notes", "were", "read", "on", "monday", "by", "us")
WORDS = st.lists(st.sampled_from(FILLER), max_size=12)
QUOTE_STYLES = (">", "> ", ">>", "| ", "|", " > ", "NH> ", "\uff1e", "\u00a0> ")
HTML_JOINERS = (
    "<br>",
    "<br/>\n",
    "</p><p>",
    "</div><div>",
    "</td><td>",
    "</li><li>",
    "<blockquote>",
    "</span> <span>",
    "</span><span> ",
)
INLINE_JOINERS = ("</span> <span>", "</span><span> ")


def reported(raw: bytes, person: ProtectedIdentity) -> bool:
    parsed = parse_message(raw)
    findings = reporter_protection.check(parsed, OUTSIDE, CONTEXT, reporter_protection.Params())
    return any(
        finding.code == "PROTECTED_IDENTITY" and f'"{person.value}"' in finding.private_detail
        for finding in findings
    )


@st.composite
def quote_prefixes(draw: st.DrawFn) -> str:
    """A quote prefix at depth 0-4, each level in its own style, maybe with trailing space."""
    depth = draw(st.integers(0, 4))
    return "".join(draw(st.sampled_from(QUOTE_STYLES)) for _ in range(depth))


@st.composite
def wrapped_lines(draw: st.DrawFn, person: ProtectedIdentity) -> list[str]:
    """One paragraph naming ``person``, wrapped at a random column or between the name's words."""
    before, after = draw(WORDS), draw(WORDS)
    name_words = person.value.split(" ")
    way = draw(st.sampled_from(["between-words", "hyphenated", "re-wrapped", "wrapped"]))
    if way == "re-wrapped":
        # A client re-wrapped quoted text: the markers of the next line sit between the name's words.
        cut = draw(st.integers(1, len(name_words) - 1))
        markers = draw(st.sampled_from([">", "> >", ">>", "\uff1e"]))
        return ["> " + " ".join([*before, *name_words[:cut], markers, *name_words[cut:], *after])]
    if way == "hyphenated":
        # A name's word hyphenated across the line break ("Had-" / "dad").
        index = draw(st.integers(0, len(name_words) - 1))
        word = name_words[index]
        cut = draw(st.integers(1, len(word) - 1))
        first = [*before, *name_words[:index], word[:cut] + "-"]
        return [" ".join(first), " ".join([word[cut:], *name_words[index + 1 :], *after])]
    if way == "between-words":
        # A break between two of the name's words, the rest of the paragraph on the two lines.
        cut = draw(st.integers(1, len(name_words) - 1))
        return [" ".join([*before, *name_words[:cut]]), " ".join([*name_words[cut:], *after])]
    paragraph = " ".join([*before, person.value, *after])
    width = draw(st.integers(1, 80))
    return textwrap.wrap(paragraph, width=width, break_long_words=False, break_on_hyphens=False)


@st.composite
def quoted_texts(draw: st.DrawFn, person: ProtectedIdentity) -> list[tuple[str, str]]:
    """Each line's quote prefix, and its text (with trailing spaces)."""
    lines = draw(wrapped_lines(person))
    return [(draw(quote_prefixes()), line + draw(st.sampled_from(["", " ", "  ", "\t"]))) for line in lines]


@st.composite
def body_messages(draw: st.DrawFn) -> tuple[bytes, ProtectedIdentity]:
    person = draw(st.sampled_from(PEOPLE))
    lines = draw(quoted_texts(person))
    if draw(st.booleans()):
        text = "\n".join(prefix + line for prefix, line in lines)
        flowed = draw(st.booleans())
        content_type = "text/plain; format=flowed" if flowed else "text/plain"
        encoding = draw(st.sampled_from(["8bit", "quoted-printable", "base64"]))
        size = len(text.encode())
        breaks = tuple(draw(st.lists(st.integers(0, max(size - 1, 0)), max_size=4)))
        part = Part(
            content_type=content_type,
            body=text,
            encoding=encoding,
            break_at=breaks if encoding == "quoted-printable" else (),
        )
    else:
        joined = html.escape("".join(lines[0]))
        for prefix, line in lines[1:]:
            joiner = draw(st.sampled_from(HTML_JOINERS))
            if joiner in INLINE_JOINERS and joined.rstrip().endswith("-"):
                joiner = "<br>"  # a hyphen inside a line is a hyphen, not a line break
            # Inline markup continues the line: no quote prefix there.
            shown = line if joiner in INLINE_JOINERS else prefix + line
            joined += joiner + html.escape(shown)
        markup = f"<html><body><table><tr><td><p><div><span>{joined}</span></div></p></td></tr></table>"
        part = Part(content_type="text/html", body=markup + "</body></html>", encoding="8bit")
    return render(Message(body=part)), person


@st.composite
def header_messages(draw: st.DrawFn) -> tuple[bytes, ProtectedIdentity]:
    """The name glued to its neighbours by adjacent encoded-words, cut at random places."""
    person = draw(st.sampled_from(PEOPLE))
    glue = st.text(alphabet="abcxyz019é\u200b\u0301", min_size=1, max_size=4)
    before = draw(st.one_of(st.just(""), glue, st.just("Re: ")))
    after = draw(st.one_of(st.just(""), glue, st.just(" notes")))
    text = before + person.value + after
    # Cut where the name meets a neighbour (that is what glues it), and anywhere else.
    cuts = {len(before), len(before) + len(person.value)}
    cuts |= set(draw(st.lists(st.integers(1, len(text) - 1), max_size=6)))
    edges = [0, *sorted(cut for cut in cuts if 0 < cut < len(text)), len(text)]
    pieces = [text[start:end] for start, end in itertools.pairwise(edges)]
    charset = draw(st.sampled_from(["utf-8", "iso-8859-1"]))
    if not all(char.encode(charset, "ignore") for char in text):
        charset = "utf-8"  # an invisible character or a combining mark Latin-1 cannot carry
    encoding = draw(st.sampled_from(["B", "Q"]))
    separator = draw(st.sampled_from([" ", "\r\n ", "\t", ""]))
    value = separator.join(encoded_word(piece, charset, encoding) for piece in pieces)
    name = draw(st.sampled_from(["Subject", "Comments", "X-Note"]))
    headers = (*(header for header in DEFAULT_HEADERS if header[0] != name), (name, value))
    return render(Message(headers=headers, body=Part(body="see the header"))), person


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body_messages())
def test_a_name_split_by_quoting_or_layout_is_reported(example: tuple[bytes, ProtectedIdentity]) -> None:
    raw, person = example
    assert reported(raw, person), raw


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(header_messages())
def test_a_name_glued_by_encoded_words_is_reported(example: tuple[bytes, ProtectedIdentity]) -> None:
    raw, person = example
    assert reported(raw, person), raw


@st.composite
def separated_halves(draw: st.DrawFn) -> tuple[bytes, ProtectedIdentity]:
    """The name's first word ends one quoted paragraph (or line), its last word is elsewhere."""
    person = draw(st.sampled_from(PEOPLE))
    first, last = person.value.split(" ")[0], person.value.split(" ")[-1]
    between = draw(st.sampled_from(["blank", "words"]))
    lines = [draw(quote_prefixes()) + " ".join([*draw(WORDS), first])]
    if between == "blank":
        lines.append(draw(quote_prefixes()).rstrip())  # a blank line, quoted or not
    else:
        lines.append(draw(quote_prefixes()) + " ".join(draw(WORDS.filter(bool))))
    lines.append(">" + draw(quote_prefixes()) + " ".join([last, *draw(WORDS)]))
    return render(Message(body=Part(body="\n".join(lines), encoding="8bit"))), person


@settings(max_examples=200, deadline=None)
@given(separated_halves())
def test_halves_in_different_places_are_not_joined(example: tuple[bytes, ProtectedIdentity]) -> None:
    raw, person = example
    assert not reported(raw, person), raw
