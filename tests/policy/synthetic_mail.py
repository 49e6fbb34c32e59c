"""A corpus of odd but real-world-shaped messages that the project builds itself.

It stands in for the shared real-mail collection where that is missing, and adds shapes the
collection has few of: every common charset in every transfer encoding, encoded-words in headers,
nested and attached messages, calendar and CSV parts, and the traps a name matcher falls into
(``ISO-2022-JP`` and ``.co.jp`` beside an alias "JP", ``Beijing`` beside "Jin", ``<li>`` beside
"Li", a mailing list called ``sparklist`` beside the username "jpark"). ``MALFORMED`` holds
messages that break MIME or RFC 5322 in ways two readers can resolve differently, each with the
reason the gateway must give.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from tests.policy.builders import (
    Attached,
    Message,
    Multipart,
    Node,
    Part,
    encoded_word,
    encoded_words,
    with_headers,
)

# Prose in several languages, with the matcher's traps but no protected person in it.
PROSE = {
    "en": (
        "The spring meetup moved to the hall on Park Street. Beijing and Tokyo sent speakers; the\n"
        "ISO-2022-JP mail from the .co.jp sponsor arrived garbled, so the sparklist archive has it.\n"
        "Please bring the listed items from the checklist, and jinja templates for the talks page.\n"
    ),
    "de": "Grüße aus München: die Straße ist gesperrt, wir treffen uns im Büro an der Ecke.\n",
    "fr": "Le comité s'est réuni à l'hôtel ; les élèves ont préparé des crêpes pour tout le monde.\n",
    "ru": "Встреча перенесена на пятницу, просьба принести ноутбуки и зарядные устройства.\n",
    "el": "Η συνάντηση μεταφέρθηκε την Παρασκευή· φέρτε τους φορητούς υπολογιστές σας.\n",
    "ja": "来週の会議は大阪で行います。資料は事前に共有してください。北京からも参加者がいます。\n",
    "zh": "会议改在北京举行,请提前准备好演讲稿和幻灯片。\n",
    "zh-hant": "會議改在臺北舉行,請提前準備好演講稿和投影片。\n",
    "ko": "다음 주 회의는 서울에서 열립니다. 자료를 미리 공유해 주세요.\n",
    "he": "הפגישה הועברה ליום שישי, נא להביא מחשבים ניידים.\n",
}
# Charsets each language can be written in, besides UTF-8.
CHARSETS = {
    "en": ("us-ascii", "iso-8859-1", "windows-1252"),
    "de": ("iso-8859-1", "iso-8859-15", "windows-1252"),
    "fr": ("iso-8859-1", "windows-1252"),
    "ru": ("koi8-r", "windows-1251", "iso-8859-5"),
    "el": ("iso-8859-7", "windows-1253"),
    "ja": ("iso-2022-jp", "shift_jis", "euc-jp"),
    "zh": ("gb2312", "gb18030"),
    "zh-hant": ("big5",),
    "ko": ("euc-kr",),
    "he": ("iso-8859-8", "windows-1255"),
}
TRANSFER_ENCODINGS = ("7bit", "8bit", "quoted-printable", "base64")


def _transfer_encodings(body: bytes) -> tuple[str, ...]:
    if body.isascii():
        return TRANSFER_ENCODINGS
    return ("8bit", "quoted-printable", "base64")


def _single_parts() -> Iterator[tuple[str, Message]]:
    for language, text in PROSE.items():
        for charset in ("utf-8", *CHARSETS[language]):
            body = text.encode(charset)
            for encoding in _transfer_encodings(body):
                subject = encoded_word(
                    text.split("\n")[0][:40], charset, "B" if encoding == "base64" else "Q"
                )
                yield (
                    f"plain-{language}-{charset}-{encoding}",
                    Message(
                        headers=with_headers(Subject=subject),
                        body=Part(body=body, encoding=encoding, charset=charset),
                    ),
                )


def _structures() -> Iterator[tuple[str, Message]]:
    english = PROSE["en"]
    html = (
        "<html><body><ul><li>Agenda</li><li>Venue: Park Street</li></ul>"
        "<p>See you in Beijing.</p></body></html>"
    )
    calendar = (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nSUMMARY:Spring meetup\r\n"
        "LOCATION:Hall on Park Street\r\nORGANIZER;CN=Events Team:mailto:events@example.org\r\n"
        "DESCRIPTION:Talks and a long description that is folded across\r\n  two lines by the writer\r\n"
        "END:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    csv = "city,venue,seats\r\nBeijing,Hall A,120\r\nOsaka,Hall B,80\r\n"
    alternative = Multipart("alternative", (Part(body=english), Part("text/html", html)))
    yield "alternative", Message(body=alternative)
    yield (
        "mixed-attachments",
        Message(
            body=Multipart(
                "mixed",
                (
                    alternative,
                    Part("text/calendar", calendar, filename="meetup.ics"),
                    Part("text/csv", csv, encoding="base64", filename="venues.csv"),
                    Part(
                        "text/plain",
                        PROSE["de"],
                        encoding="quoted-printable",
                        charset="iso-8859-1",
                        filename="Grüße.txt",
                        filename_style="2231-split",
                    ),
                ),
                preamble="This is a multi-part message in MIME format.",
                epilogue="(end)",
            )
        ),
    )
    forwarded = Message(
        headers=with_headers(Subject=encoded_words("Fwd: 会議の件", "iso-2022-jp")),
        body=Part(body=PROSE["ja"].encode("iso-2022-jp"), charset="iso-2022-jp"),
    )
    yield (
        "attached-message",
        Message(body=Multipart("mixed", (Part(body="Forwarding this."), Attached(forwarded)))),
    )
    nested: Node = Part(body=english)
    for depth in range(6):
        nested = Multipart("mixed", (Part(body=f"level {depth}"), nested))
    yield "nested-six-deep", Message(body=nested)
    yield (
        "digest",
        Message(
            body=Multipart(
                "digest", tuple(Attached(Message(body=Part(body=PROSE[lang]))) for lang in ("en", "fr"))
            )
        ),
    )
    yield (
        "signed-clear",
        Message(
            body=Multipart(
                "signed",
                (
                    Part(body=english),
                    Part(
                        "application/pgp-signature",
                        "-----BEGIN PGP SIGNATURE-----\r\niQEz\r\n-----END PGP SIGNATURE-----",
                    ),
                ),
                parameters='; protocol="application/pgp-signature"; micalg=pgp-sha256',
            )
        ),
    )
    yield (
        "format-flowed",
        Message(
            body=Part(
                body="A line that is flowed \r\nacross two lines.\r\n> quoted \r\n> reply\r\n",
                headers=(("X-Unused", "1"),),
            )
        ),
    )
    yield (
        "header-traps",
        Message(
            headers=with_headers(
                To="sparklist <sparklist@lists.example.net>",
                Cc='"Park, Dev Team" <dev-team@example.org>',
                Subject=encoded_words("Beijing office & ISO-2022-JP", "utf-8", "Q", chunk=5),
                Reply_To="jp-office@example.co.jp",
            ),
            body=Part(body=english),
        ),
    )


def corpus() -> Iterator[tuple[str, Message]]:
    """Every well-formed synthetic message, each with a stable name."""
    yield from itertools.chain(_single_parts(), _structures())


def _broken(headers: str, body: str) -> bytes:
    return (headers.replace("\n", "\r\n") + "\r\n" + body.replace("\n", "\r\n")).encode("latin-1")


BASE_HEADERS = (
    "From: Member One <one@committee.example.org>\nTo: someone@example.net\nMessage-ID: <s@example.org>\n"
)

MALFORMED: dict[str, tuple[bytes, str]] = {
    "no-closing-boundary": (
        _broken(
            BASE_HEADERS + "Subject: x\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b1\n",
            "--b1\nContent-Type: text/plain\n\nhello\n",
        ),
        "no closing boundary",
    ),
    "two-subjects": (
        _broken(BASE_HEADERS + "Subject: one\nSubject: two\n", "hello\n"),
        "more than one Subject header",
    ),
    "bad-base64": (
        _broken(
            BASE_HEADERS + "Subject: x\nMIME-Version: 1.0\nContent-Type: text/plain\n"
            "Content-Transfer-Encoding: base64\n",
            "aGVsbG8gd29ybGQ!!!*\n",
        ),
        "invalid base64",
    ),
    "reused-boundary": (
        _broken(
            BASE_HEADERS + "Subject: x\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b1\n",
            "--b1\nContent-Type: multipart/alternative; boundary=b1\n\n--b1\nContent-Type: text/plain\n\n"
            "hi\n--b1--\n--b1--\n",
        ),
        "reuses the boundary",
    ),
    "header-not-utf8": (
        _broken(BASE_HEADERS + "Subject: caf\xe9\n", "hello\n"),
        "not valid UTF-8",
    ),
}
