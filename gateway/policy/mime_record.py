"""What one pass over a message records (text segments, unreadable parts, media, ambiguities) in limits."""

from __future__ import annotations

import re

from gateway.policy.charsets import decode_encoded_words
from gateway.policy.escapes import escaped_readings
from gateway.policy.extract.parts import Budget
from gateway.policy.extract.sniff import Format
from gateway.policy.header_fields import Header, message_ids
from gateway.policy.model import Address, ParsedMessage, SegmentKind, TextSegment, Uninspectable
from gateway.policy.normalize import RLO, visual_overrides
from gateway.policy.reading import read_as_human

MAX_PARTS = 1000  # MIME entities (parts and attached messages) in one message
MAX_DEPTH = 32  # nesting of multiparts and attached messages
MAX_TEXT_CHARS = 50_000_000  # decoded text over the whole message
LEADING_TEXT_CHARS = 2048
FILENAME_SEPARATORS = re.compile(r"[._+\-/\\]+")


class Refused(Exception):
    """A limit was exceeded: stop decoding and refuse the message with this reason."""


class MimeRecord:
    """Collects what a pass over one message finds, and stops it (:class:`Refused`) past a limit."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.segments: list[TextSegment] = []
        self.uninspectable: list[Uninspectable] = []
        self.media: list[Uninspectable] = []
        self.ambiguities: dict[str, None] = {}
        self.leading: list[str] = []
        self.signed = False
        self.parts = 0
        self.text_chars = 0
        self.top_headers: dict[str, list[Header]] = {}
        self.budget = Budget()  # what the message's attachments may still unpack
        self.top_addresses: dict[str, tuple[Address, ...]] = {}

    def _ambiguous(self, reason: str) -> None:
        self.ambiguities[reason] = None

    def _segment(
        self, where: str, kind: SegmentKind, text: str, reading: str = "", *, escapes: bool = True
    ) -> None:
        if not text or text.isspace():
            return
        if escapes:
            # Percent-escapes, \u escapes and Markdown markers: read once more as the reader sees them.
            for seen in escaped_readings(text):
                self._segment(where, kind, seen, escapes=False)
        if RLO in text:
            # What the reader sees, reversed by right-to-left overrides, and what a copy says.
            text = f"{text}\n{visual_overrides(text)}"
        if not reading and kind not in (SegmentKind.HEADER, SegmentKind.FILENAME):
            read = read_as_human(text, kind)
            if "=?" in read:
                # A forwarded header block pasted into a body can carry encoded-words.
                read = decode_encoded_words(read)
            reading = "" if read == text else read
        self.text_chars += len(text) + len(reading)
        if self.text_chars > MAX_TEXT_CHARS:
            raise Refused(f"the message holds too much text to inspect (limit {MAX_TEXT_CHARS} characters)")
        self.segments.append(TextSegment(where=where, kind=kind, text=text, reading=reading))

    def _filename(self, where: str, name: str, reading: str = "") -> None:
        # In a file name, dots, dashes and underscores separate words ("JP_notes.txt" names "JP"):
        # read it as written and with those separators as spaces.
        self._segment(where, SegmentKind.FILENAME, f"{name}\n{FILENAME_SEPARATORS.sub(' ', name)}", reading)

    def _cannot_read(self, where: str, reason: str, kind: str) -> None:
        self.uninspectable.append(Uninspectable(where=where, reason=reason, kind=kind))

    def _count_entity(self, depth: int) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise Refused(f"too many MIME parts (limit {MAX_PARTS})")
        if depth > MAX_DEPTH:
            raise Refused(f"MIME parts are nested too deeply (limit {MAX_DEPTH} levels)")

    def _media(self, where: str, found: Format) -> None:
        noun = {Format.AUDIO: "a sound recording", Format.VIDEO: "a video"}.get(found, "an image")
        self.media.append(Uninspectable(where, f"it is {noun}", "media"))

    def result(self) -> ParsedMessage:
        headers = self.top_headers

        def first_text(key: str) -> str:
            found = headers.get(key)
            return found[0].text.strip() if found else ""

        return ParsedMessage(
            raw=self.raw,
            message_id=first_text("message-id") or None,
            in_reply_to=message_ids(first_text("in-reply-to")),
            references=message_ids(" ".join(h.text for h in headers.get("references", []))),
            from_=self.top_addresses.get("from", ()),
            to=self.top_addresses.get("to", ()),
            cc=self.top_addresses.get("cc", ()),
            bcc=self.top_addresses.get("bcc", ()),
            subject=first_text("subject"),
            segments=tuple(self.segments),
            uninspectable=tuple(self.uninspectable),
            ambiguities=tuple(self.ambiguities),
            signed=self.signed,
            leading_text=tuple(self.leading),
            media=tuple(self.media),
        )


def refused_message(raw: bytes, reason: str) -> ParsedMessage:
    """A message refused unread: ``reason`` is its one ambiguity."""
    return ParsedMessage(
        raw=raw,
        message_id=None,
        in_reply_to=(),
        references=(),
        from_=(),
        to=(),
        cc=(),
        bcc=(),
        subject="",
        segments=(),
        uninspectable=(),
        ambiguities=(reason,),
        signed=False,
    )
