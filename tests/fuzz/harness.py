"""The fuzzing harness: the screening path as the gateway runs it, seeds, mutations and hostile shapes.

``screen(raw)`` runs what a submission goes through after DATA: the SMTP layer's byte and header
checks (``check_bytes``, ``read_headers``), then parse, evaluate under the shipped policy and rewrite
(``evaluate_submission``, as the policy screener and ``conduct-gateway check`` run it), and the reply
the client would get. It raises only when the gateway would answer with a fault of its own (an
exception, a rule error: 451 to the client, retried forever); bad input must get a 5xx, anything
else a verdict.

Seeds are the real-mail collection (``GATEWAY_TEST_REAL_MAIL``, default ``../shared/real-mail``
beside the repository) and a small corpus of the project's own; :func:`mutate` damages them the way
hostile or broken senders do. :data:`GROWTH_FAMILIES` build messages of any size from one repeated
piece, for the growth test.
"""

from __future__ import annotations

import base64
import os
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from gateway.decision.evaluation import Evaluation, evaluate_submission
from gateway.decision.screening import Submission
from gateway.intake.dataread import BadMessage, check_bytes, read_headers
from gateway.mail.verdict_replies import refusal
from gateway.policy.engine import CompiledPolicy, compile_policy
from gateway.policy.loader import read_policy
from gateway.policy.model import Outcome
from gateway.settings import LimitsSettings

REPO = Path(__file__).resolve().parents[2]
REAL_MAIL = Path(os.environ.get("GATEWAY_TEST_REAL_MAIL") or REPO.parent / "shared" / "real-mail")
REGRESSIONS = Path(__file__).resolve().parent / "regressions"
SENDER = "ada.quill@example.org"
# An outsider, a moderator (anonymisation and communication apply), the conduct address and a reporter:
# every rule of the shipped policy has a recipient it applies to.
RECIPIENTS = (
    "someone@example.net",
    "mods@forum.example.net",
    "conduct@example.org",
    "robin.castellano@mail.example.net",
)
MAX_LINE_LENGTH = LimitsSettings().max_line_length


@cache
def policy() -> CompiledPolicy:
    document, source = read_policy(REPO / "gateway" / "data" / "default-policy.yaml")
    return compile_policy(document, source)


@dataclass(frozen=True)
class Screened:
    """What the client would be told: the reply code and enhanced status, and where it was decided."""

    code: int
    status: str
    stage: str  # "intake" (the SMTP layer's checks) or the verdict's outcome
    text: str = ""  # the reply's text


class GatewayFault(AssertionError):
    """The gateway would answer with a fault of its own (451) instead of a verdict or a 5xx."""


def screen(raw: bytes) -> Screened:
    """Screen ``raw`` as the gateway does after DATA; GatewayFault (or the exception) on a fault of ours."""
    submission = Submission("fuzz", SENDER, RECIPIENTS, SENDER, raw)
    # Parse and evaluate whatever the intake says: the parser must never raise on anything.
    evaluation = evaluate_submission(submission, policy(), None)
    errors = [d.finding.rule for d in evaluation.verdict.decisions if d.finding.code == "RULE_ERROR"]
    if errors:
        raise GatewayFault(f"rules raised: {errors}")
    try:
        check_bytes(raw, MAX_LINE_LENGTH)
        read_headers(raw)
    except BadMessage as refused:
        if not 500 <= refused.response.code < 600:
            raise GatewayFault(f"intake refused bad input with {refused.response.code}") from None
        response = refused.response
        return Screened(response.code, response.status, "intake", " ".join(response.lines))
    return _verdict_reply(evaluation)


def _verdict_reply(evaluation: Evaluation) -> Screened:
    verdict = evaluation.verdict
    if verdict.outcome in (Outcome.DELIVER, Outcome.REWRITE):
        if evaluation.rewrite_error:
            return Screened(550, "5.7.1", "rewrite-refused")
        return Screened(250, "2.0.0", "")
    if verdict.outcome is Outcome.HOLD:
        return Screened(250, "2.0.0", "hold")
    reply = refusal(verdict, "fuzz")
    if not 500 <= reply.code < 600:
        raise GatewayFault(f"verdict {verdict.outcome.value} answered {reply.code} {reply.status}")
    return Screened(reply.code, reply.status, verdict.outcome.value, " ".join(reply.lines))


# --- seeds ----------------------------------------------------------------------------------------


def crlf(data: bytes) -> bytes:
    """Line endings as a mail client sends them over SMTP."""
    return re.sub(rb"\r?\n|\r", b"\r\n", data)


def real_mail() -> list[bytes]:
    """The real-mail collection (empty when it is not there), CRLF line endings."""
    if not REAL_MAIL.is_dir():
        return []
    return [crlf(path.read_bytes()) for path in sorted(REAL_MAIL.rglob("*.eml"))]


def _headers(*lines: str) -> str:
    return "".join(f"{line}\r\n" for line in lines)


_BASE = _headers(
    "From: Ada Quill <ada.quill@example.org>",
    "To: Someone <someone@example.net>, mods@forum.example.net",
    "Cc: conduct@example.org",
    "Subject: About the event",
    "Date: Mon, 01 Jan 2024 10:00:00 +0000",
    "Message-ID: <seed@example.org>",
)


def own_seeds() -> list[bytes]:
    """The project's own seeds: each MIME shape the parser has a code path for."""
    html = (
        "<html><body><p>Hello,</p><blockquote>On Mon, Pat wrote:<br>&gt; earlier</blockquote></body></html>"
    )
    seeds = [
        _BASE + "\r\nHello,\r\n\r\nOn Mon, 1 Jan 2024 at 10:00, Pat <pat@example.com> wrote:\r\n"
        "> earlier\r\n",
        _BASE + "MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=b1\r\n\r\n"
        "--b1\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        "Caf=C3=A9 at 9pm\r\n--b1\r\nContent-Type: text/html\r\n\r\n" + html + "\r\n--b1--\r\n",
        _BASE + "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b2\r\n\r\n"
        "--b2\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n--b2\r\n"
        'Content-Type: application/octet-stream; name="=?utf-8?q?notes=2Etxt?="\r\n'
        "Content-Disposition: attachment; filename*=utf-8''notes%20two.txt\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.b64encode(b"Some notes\r\n").decode()
        + "\r\n--b2\r\nContent-Type: message/rfc822\r\n\r\n"
        + _BASE
        + "\r\nforwarded text\r\n--b2--\r\n",
    ]
    return [seed.encode("utf-8") for seed in seeds]


# --- mutations ------------------------------------------------------------------------------------

_CONTROL = [bytes([byte]) for byte in (*range(0, 9), *range(11, 13), *range(14, 32), 127)]
_ADDRESS_JUNK = [b"<", b">", b"@", b'"', b"(", b")", b"\\", b",", b";", b":", b"<@", b"@>", b"<>", b"g:;"]


def _encoded_word(rng: random.Random) -> bytes:
    payload = bytes(rng.randrange(256) for _ in range(rng.randint(0, 8)))
    if rng.random() < 0.5:
        return b"=?utf-8?b?" + base64.b64encode(payload) + b"?="
    quoted = b"".join(b"=%02X" % byte for byte in payload)
    return b"=?" + rng.choice([b"utf-8", b"iso-8859-1", b"x-unknown", b"utf-7"]) + b"?q?" + quoted + b"?="


def _split(raw: bytes) -> tuple[list[bytes], bytes]:
    head, separator, body = raw.partition(b"\r\n\r\n")
    return head.split(b"\r\n"), body if separator else b""


def _join(lines: list[bytes], body: bytes) -> bytes:
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _truncate_header(rng: random.Random, raw: bytes) -> bytes:
    lines, body = _split(raw)
    index = rng.randrange(len(lines))
    lines[index] = lines[index][: rng.randint(0, len(lines[index]))]
    return _join(lines, body)


def _delete_specials(rng: random.Random, raw: bytes) -> bytes:
    lines, body = _split(raw)
    index = rng.randrange(len(lines))
    special = rng.choice([b">", b"<", b"@", b'"', b"(", b")", b":", b";"])
    lines[index] = lines[index].replace(special, b"", rng.randint(1, 3))
    return _join(lines, body)


def _insert_address_junk(rng: random.Random, raw: bytes) -> bytes:
    lines, body = _split(raw)
    index = rng.randrange(len(lines))
    line = lines[index]
    at = rng.randint(min(len(line), line.find(b":") + 1), len(line))
    junk = b"".join(rng.choice(_ADDRESS_JUNK) for _ in range(rng.randint(1, 6)))
    lines[index] = line[:at] + junk + line[at:]
    return _join(lines, body)


def _duplicate_header(rng: random.Random, raw: bytes) -> bytes:
    lines, body = _split(raw)
    index = rng.randrange(len(lines))
    lines.insert(rng.randint(0, len(lines)), lines[index])
    return _join(lines, body)


def _control_char(rng: random.Random, raw: bytes) -> bytes:
    at = rng.randrange(len(raw) + 1)
    return raw[:at] + rng.choice(_CONTROL) + raw[at:]


def _encoded_words(rng: random.Random, raw: bytes) -> bytes:
    lines, body = _split(raw)
    words = b" ".join(_encoded_word(rng) for _ in range(rng.randint(1, 4)))
    target = rng.choice([b"Subject: ", b"From: ", b"To: ", b"X-Fuzz: ", b"Content-Type: text/plain; name="])
    lines.insert(rng.randint(0, len(lines)), target + words)
    return _join(lines, body)


def _deep_nesting(rng: random.Random, raw: bytes) -> bytes:
    depth = rng.choice([5, 31, 33, 200])
    opening = b"".join(
        b"Content-Type: multipart/mixed; boundary=n%d\r\n\r\n--n%d\r\n" % (level, level)
        for level in range(depth)
    )
    lines, body = _split(raw)
    lines = [line for line in lines if not line.lower().startswith(b"content-")]
    return b"\r\n".join(lines) + b"\r\n" + opening + b"Content-Type: text/plain\r\n\r\n" + body


def _huge_line(rng: random.Random, raw: bytes) -> bytes:
    unit = rng.choice([b" ", b">", b"a", b"(", b"=?", b"<a", b"\t", b"0:"])
    at = rng.randrange(len(raw) + 1)
    return raw[:at] + unit * rng.choice([1000, 5000, 20000]) + raw[at:]


def _long_address_header(rng: random.Random, raw: bytes) -> bytes:
    lines, body = _split(raw)
    unit = rng.choice([b"(", b'"\\', b"a@b.example, ", b"<", b"g:a@b.example;", b"\\(", b"(a)"])
    lines.insert(1, rng.choice([b"To: ", b"Cc: ", b"From: "]) + unit * rng.choice([100, 1000, 5000]))
    return _join(lines, body)


def _blank_lines(rng: random.Random, raw: bytes) -> bytes:
    unit = rng.choice([b"\r\n", b" \r\n", b">\r\n", b"> > >\r\n", b"On Mon, Pat wrote:\r\n"])
    lines, body = _split(raw)
    at = rng.randrange(len(body) + 1)
    return _join(lines, body[:at] + unit * rng.choice([10, 500, 3000]) + body[at:])


MUTATIONS: tuple[Callable[[random.Random, bytes], bytes], ...] = (
    _truncate_header,
    _delete_specials,
    _insert_address_junk,
    _duplicate_header,
    _control_char,
    _encoded_words,
    _deep_nesting,
    _huge_line,
    _long_address_header,
    _blank_lines,
)


def mutate(rng: random.Random, raw: bytes, rounds: int) -> bytes:
    """``raw`` damaged ``rounds`` times by mutations chosen with ``rng``."""
    for _ in range(rounds):
        raw = rng.choice(MUTATIONS)(rng, raw)
    return raw


# --- growth: a message of any size built from one repeated piece ------------------------------------


def _message(body: str, *, headers: str = "", content_type: str = "text/plain; charset=utf-8") -> bytes:
    return (
        _BASE + headers + f"MIME-Version: 1.0\r\nContent-Type: {content_type}\r\n\r\n" + body + "\r\n"
    ).encode("utf-8")


def _body_run(unit: str) -> Callable[[int, str], bytes]:
    """Own text, ``unit`` n times, then a quoted line: what split_body and the rules scan."""
    return lambda n, nonce: _message(f"Hello {nonce},\r\n" + unit * n + "> quoted line\r\nThanks\r\n")


def _html_run(unit: str) -> Callable[[int, str], bytes]:
    return lambda n, nonce: _message(
        f"<html><body><p>Hello {nonce}</p>" + unit * n + "</body></html>", content_type="text/html"
    )


def _style_run(unit: str) -> Callable[[int, str], bytes]:
    return lambda n, nonce: _message(
        f"<html><head><style>p {{ color: red }} {unit * n}</style></head><body>Hi {nonce}</body></html>",
        content_type="text/html",
    )


def _xml_run(unit: str) -> Callable[[int, str], bytes]:
    # The run ends the part: html.parser was quadratic on unclosed "<!--" with no ">" after them.
    return lambda n, nonce: _message(
        f'<?xml version="1.0"?><report><who>Hello {nonce}</who>' + unit * n,
        content_type="text/xml; charset=utf-8",
    )


def _many_headers(n: int, nonce: str) -> bytes:
    headers = "".join(f"X-Note-{i}: value {i} at 10:00\r\n" for i in range(n))
    return _message(f"Hello {nonce}", headers=headers)


def _encoded_subject(n: int, nonce: str) -> bytes:
    words = "\r\n ".join("=?utf-8?q?w=C3=A9rd_" + str(i) + "?=" for i in range(n))
    return _message(f"Hello {nonce}", headers=f"X-Subject: {words}\r\n")


def _long_recipient_list(n: int, nonce: str) -> bytes:
    people = ",\r\n ".join(f'"Person {i}" <p{i}@example.net>' for i in range(n))
    return _message(f"Hello {nonce}", headers=f"X-To: {people}\r\n")


def _to_list(n: int, nonce: str) -> bytes:
    # The real To header: read by the address parser, the audience rules and the banner check.
    people = ",\r\n ".join(f'"Person {i}" <p{i}@example.net>' for i in range(n))
    return _message(f"Hello {nonce}", headers="X-Recipients: listed\r\n").replace(
        b"To: Someone <someone@example.net>, mods@forum.example.net", f"To: {people}".encode()
    )


def _references(n: int, nonce: str) -> bytes:
    ids = "\r\n ".join(f"<m{i}.{nonce}@example.org>" for i in range(n))
    return _message(f"Hello {nonce}", headers=f"References: {ids}\r\nIn-Reply-To: <m0@example.org>\r\n")


def _many_parts(n: int, nonce: str) -> bytes:
    parts = "".join(f"--p\r\nContent-Type: text/plain\r\n\r\npart {i} of {nonce}\r\n" for i in range(n))
    return _message(parts + "--p--", content_type="multipart/mixed; boundary=p")


def _long_line(unit: str) -> Callable[[int, str], bytes]:
    # One physical line, folded with quoted-printable soft breaks so the intake's line limit holds.
    return lambda n, nonce: _message(
        f"Hello {nonce}\r\n" + "=\r\n".join([unit * 60] * (n // 60 + 1)),
        headers="Content-Transfer-Encoding: quoted-printable\r\n",
    )


def _rewritten(build: Callable[[int, str], bytes]) -> Callable[[int, str], bytes]:
    """The same message without the conduct address in Cc: the rewriter adds it (and its banner)."""
    return lambda n, nonce: build(n, nonce).replace(b"Cc: conduct@example.org\r\n", b"", 1)


# Each family builds a message from one repeated piece: (name, builder, n for the base size).
GROWTH_FAMILIES: dict[str, tuple[Callable[[int, str], bytes], int]] = {
    "empty lines": (_body_run("\r\n"), 40_000),
    "space-only lines": (_body_run(" \r\n"), 30_000),
    "quote markers": (_body_run(">\r\n"), 30_000),
    "deep quote markers": (_body_run("> > > > > > > > x\r\n"), 6_000),
    "attribution lines": (_body_run("On Mon, 1 Jan, Pat wrote:\r\n> a\r\n"), 3_000),
    "forward separators": (_body_run("-- \r\n"), 20_000),
    "spaces": (_body_run(" " * 900 + "\r\n"), 100),
    "digits and colons": (_body_run("1:2 3.4 5/6 7 8 at 9 "), 4_000),
    "weekday words": (_body_run("tuesday march the 3 at "), 3_000),
    "gendered words": (_body_run("he she him her "), 5_000),
    "long words": (_body_run("x" * 990 + "\r\n"), 100),
    "html tags": (_html_run("<b>"), 20_000),
    "unclosed html tags": (_html_run("<a"), 20_000),
    "hidden html elements": (_html_run('<span style="display:none">x'), 5_000),
    "unclosed hiding styles": (_html_run('<p style="font-size:0'), 5_000),
    "markdown markers in words": (_body_run("a**b `c` "), 5_000),
    "percent escapes": (_body_run("%41%20 "), 5_000),
    "right-to-left overrides": (_body_run("\u202eab "), 5_000),
    "html comments": (_html_run("<!--"), 10_000),
    "nested html": (_html_run("<div>x"), 10_000),
    "css attributes": (_html_run("<p style='/*'>a</p>"), 3_000),
    "unclosed css comments": (_style_run("/* a "), 15_000),
    "unclosed css strings": (_style_run("'\\"), 30_000),
    "many headers": (_many_headers, 2_000),
    "encoded-words": (_encoded_subject, 2_000),
    "long recipient list": (_long_recipient_list, 3_000),
    "many parts": (_many_parts, 400),
    "to list": (_to_list, 1_500),
    "references": (_references, 8_000),
    "near-miss names": (_body_run("Robin Castellan0 robin.castellano@mail.example.ne "), 1_500),
    "blockquotes": (_html_run("<blockquote>x"), 10_000),
    "xml comments": (_xml_run("<!--"), 10_000),
    "xml cdata sections": (_xml_run("<![CDATA["), 5_000),
    "xml processing instructions": (_xml_run("<?x "), 10_000),
    "xml elements": (_xml_run("<w:r><w:t>a</w:t></w:r>"), 5_000),
    "nested xml": (_xml_run("<a b='c'>x"), 10_000),
    "xml entity references": (_xml_run("&e;&#233;&amp;"), 5_000),
    "xml scripts": (_xml_run("<script>a</script>"), 5_000),
    "empty lines, rewritten": (_rewritten(_body_run("\r\n")), 40_000),
    "quote markers, rewritten": (_rewritten(_body_run("> a\r\n")), 20_000),
    "html tags, rewritten": (_rewritten(_html_run("<p>a</p>")), 10_000),
    "many parts, rewritten": (_rewritten(_many_parts), 400),
    "one long line": (_long_line("a "), 60_000),
    "one long line of markers": (_long_line("> "), 60_000),
}
