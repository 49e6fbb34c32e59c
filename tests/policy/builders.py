"""Build raw test messages byte by byte, in every encoding the gateway must decode.

The standard library's generator chooses encodings and line breaks itself; tests of a decoder need
to choose them: where a quoted-printable soft line break falls, which charset an encoded-word
uses, how an RFC 2231 file name is split into continuations. Everything here returns ``bytes``
with CRLF line endings, as a message arrives over SMTP.

    raw = render(Message(headers=(("Subject", encoded_word("Jin Park")),), body=Part(body="hi")))
"""

from __future__ import annotations

import base64
import binascii
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote

CRLF = "\r\n"
_boundaries = itertools.count(1)

DEFAULT_HEADERS: tuple[tuple[str, str], ...] = (
    ("From", "Member One <one@committee.example.org>"),
    ("To", "Outside Person <someone@example.net>"),
    ("Subject", "A message"),
    ("Date", "Mon, 01 Jan 2024 10:00:00 +0000"),
    ("Message-ID", "<builder@committee.example.org>"),
)


# --- encodings ----------------------------------------------------------------------------------


def encoded_word(text: str, charset: str = "utf-8", encoding: str = "B") -> str:
    """One RFC 2047 encoded-word (``B`` = base64, ``Q`` = quoted-printable-like)."""
    data = text.encode(charset)
    if encoding.upper() == "B":
        payload = base64.b64encode(data).decode("ascii")
    else:
        payload = "".join(
            "_"
            if byte == 0x20
            else chr(byte)
            if chr(byte).isascii() and chr(byte).isalnum()
            else f"={byte:02X}"
            for byte in data
        )
    return f"=?{charset}?{encoding.upper()}?{payload}?="


def encoded_words(text: str, charset: str = "utf-8", encoding: str = "B", *, chunk: int = 3) -> str:
    """``text`` as several adjacent encoded-words (split every ``chunk`` characters), folded."""
    pieces = [text[i : i + chunk] for i in range(0, len(text), chunk)]
    return f"{CRLF} ".join(encoded_word(piece, charset, encoding) for piece in pieces)


def quoted_printable(data: bytes, *, break_at: Iterable[int] = (), encode_all: bool = False) -> bytes:
    """Quoted-printable with soft line breaks before the given byte offsets (and every 70 chars)."""
    breaks = set(break_at)
    out: list[str] = []
    line = 0
    for index, byte in enumerate(data):
        if index in breaks or line >= 70:
            out.append("=" + CRLF)
            line = 0
        char = chr(byte)
        if byte == 0x0A:
            out.append(CRLF)
            line = 0
            continue
        if byte == 0x0D:
            continue
        token = f"={byte:02X}" if encode_all or byte > 126 or byte < 32 or char == "=" else char
        out.append(token)
        line += len(token)
    return "".join(out).encode("ascii")


def base64_lines(data: bytes, *, width: int = 76) -> bytes:
    encoded = base64.b64encode(data)
    return CRLF.encode().join(encoded[i : i + width] for i in range(0, len(encoded), width))


def uuencode(data: bytes, filename: str = "file.txt") -> bytes:
    lines = [f"begin 644 {filename}".encode()]
    for start in range(0, len(data), 45):
        lines.append(binascii.b2a_uu(data[start : start + 45]).rstrip(b"\n"))
    lines += [b"`", b"end"]
    return CRLF.encode().join(lines)


def rfc2231(name: str, value: str, charset: str = "utf-8", *, section_length: int | None = None) -> str:
    """An RFC 2231 extended parameter, split into ``name*N*`` continuations when asked."""
    encoded = quote(value.encode(charset), safe="")
    if section_length is None:
        return f"{name}*={charset}''{encoded}"
    sections: list[str] = []
    position = 0
    while position < len(encoded):
        end = min(position + section_length, len(encoded))
        while "%" in encoded[max(end - 2, position) : end] and end < len(encoded):
            end += 1  # never cut a %XX escape in half
        sections.append(encoded[position:end])
        position = end
    parts = [f"{name}*0*={charset}''{sections[0]}"]
    parts += [f"{name}*{index}*={section}" for index, section in enumerate(sections[1:], start=1)]
    return (";" + CRLF + " ").join(parts)


def encode_body(
    text: str | bytes, encoding: str, charset: str = "utf-8", *, break_at: Iterable[int] = ()
) -> bytes:
    """A body in a Content-Transfer-Encoding: 7bit, 8bit, quoted-printable, base64, x-uuencode."""
    data = text if isinstance(text, bytes) else text.encode(charset)
    if encoding == "quoted-printable":
        return quoted_printable(data, break_at=break_at)
    if encoding == "base64":
        return base64_lines(data)
    if encoding == "x-uuencode":
        return uuencode(data)
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


# --- MIME trees ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """A leaf part. ``filename_style``: plain, 2231 (one section), 2231-split, 2047."""

    content_type: str = "text/plain"
    body: str | bytes = ""
    encoding: str = "7bit"
    charset: str | None = "utf-8"
    filename: str | None = None
    filename_style: str = "plain"
    disposition: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    break_at: tuple[int, ...] = ()
    encoded: bytes | None = None  # the body already in ``encoding`` (e.g. binary quoted-printable)


@dataclass(frozen=True)
class Multipart:
    subtype: str = "mixed"
    parts: tuple[Node, ...] = ()
    boundary: str | None = None
    preamble: str = ""
    epilogue: str = ""
    parameters: str = ""  # extra Content-Type parameters, e.g. '; protocol="application/pgp-signature"'


@dataclass(frozen=True)
class Message:
    """A whole message: headers (raw values, already encoded as wanted) and a body."""

    headers: tuple[tuple[str, str], ...] = DEFAULT_HEADERS
    body: Node = field(default_factory=Part)


@dataclass(frozen=True)
class Attached:
    """A ``message/rfc822`` part holding ``message``."""

    message: Message
    filename: str | None = None


Node = Part | Multipart | Attached


def _filename_parameters(part: Part) -> tuple[str, str]:
    """(Content-Type name parameter, Content-Disposition filename parameter)."""
    name = part.filename or ""
    if part.filename_style == "2231":
        return "; " + rfc2231("name", name), "; " + rfc2231("filename", name)
    if part.filename_style == "2231-split":
        return (
            ";" + CRLF + " " + rfc2231("name", name, section_length=6),
            ";" + CRLF + " " + rfc2231("filename", name, section_length=6),
        )
    if part.filename_style == "2047":
        return f'; name="{encoded_word(name)}"', f'; filename="{encoded_word(name)}"'
    return f'; name="{name}"', f'; filename="{name}"'


def _render_node(node: Node) -> tuple[list[tuple[str, str]], bytes]:
    """Headers and body bytes of one MIME entity."""
    if isinstance(node, Part):
        content_type = node.content_type
        if node.charset and (node.content_type.startswith("text/") or isinstance(node.body, str)):
            content_type += f'; charset="{node.charset}"'
        disposition = node.disposition
        if node.filename is not None:
            name_parameter, filename_parameter = _filename_parameters(node)
            content_type += name_parameter
            disposition = (disposition or "attachment") + filename_parameter
        headers = [("Content-Type", content_type), ("Content-Transfer-Encoding", node.encoding)]
        if disposition:
            headers.append(("Content-Disposition", disposition))
        headers.extend(node.headers)
        if node.encoded is not None:
            return headers, node.encoded
        return headers, encode_body(node.body, node.encoding, node.charset or "utf-8", break_at=node.break_at)
    if isinstance(node, Attached):
        headers = [("Content-Type", "message/rfc822")]
        if node.filename is not None:
            headers.append(("Content-Disposition", f'attachment; filename="{node.filename}"'))
        return headers, render(node.message)
    boundary = node.boundary or f"=_boundary_{next(_boundaries)}_="
    chunks: list[bytes] = []
    if node.preamble:
        chunks.append(node.preamble.encode("utf-8") + b"\r\n")
    for child in node.parts:
        child_headers, child_body = _render_node(child)
        chunks.append(f"--{boundary}\r\n".encode())
        chunks.append(_header_block(child_headers) + b"\r\n" + child_body + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    if node.epilogue:
        chunks.append(node.epilogue.encode("utf-8") + b"\r\n")
    return [("Content-Type", f'multipart/{node.subtype}; boundary="{boundary}"{node.parameters}')], b"".join(
        chunks
    )


def _header_block(headers: Sequence[tuple[str, str]]) -> bytes:
    return b"".join(f"{name}: {value}\r\n".encode() for name, value in headers)


def render(message: Message) -> bytes:
    """The raw bytes of ``message`` (CRLF line endings, MIME-Version added)."""
    body_headers, body = _render_node(message.body)
    headers = [*message.headers, ("MIME-Version", "1.0"), *body_headers]
    return _header_block(headers) + b"\r\n" + body


def with_headers(**changes: str) -> tuple[tuple[str, str], ...]:
    """DEFAULT_HEADERS with some values replaced or added (``Reply_To`` for Reply-To)."""
    wanted = {name.replace("_", "-"): value for name, value in changes.items()}
    headers = [(name, wanted.pop(name, value)) for name, value in DEFAULT_HEADERS]
    return (*headers, *wanted.items())


def plain(body: str = "Hello.", **headers: str) -> bytes:
    """A one-part text/plain message."""
    return render(Message(headers=with_headers(**headers), body=Part(body=body)))
