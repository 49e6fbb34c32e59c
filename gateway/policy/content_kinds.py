"""What a MIME body is (text, HTML, XML, message, signature, binary...): by its type, name, then bytes."""

from __future__ import annotations

import codecs
import re

from gateway.policy.charsets import mail_codec


def _words(text: str) -> frozenset[str]:
    """A set of words written as one string (keeps long vocabulary tables readable)."""
    return frozenset(text.split())


_TEXT_APPLICATION_TYPES = _words(
    """application/json application/javascript application/ecmascript application/x-javascript
    application/x-sh application/x-shellscript application/x-csh application/csv application/x-csv
    application/rtf application/x-rtf application/x-tex application/x-latex application/postscript
    application/x-yaml application/yaml application/sql application/x-sql application/toml
    application/x-www-form-urlencoded application/mbox application/ics application/x-vcard
    application/x-perl application/x-python application/x-ruby application/x-php
    application/x-httpd-php application/x-subrip application/x-ndjson application/jsonl
    application/x-troff application/x-diff application/x-patch application/pgp-keys
    message/x-emlx"""
)
_XML_TYPES = frozenset({"text/xml", "application/xml", "image/svg+xml"})
_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_SIGNATURE_TYPES = frozenset(
    {"application/pgp-signature", "application/pkcs7-signature", "application/x-pkcs7-signature"}
)
_SMIME_TYPES = frozenset({"application/pkcs7-mime", "application/x-pkcs7-mime"})
_ENCRYPTED_TYPES = frozenset({"application/pgp-encrypted", "application/x-pgp-encrypted"})
_TEXT_EXTENSIONS = _words(
    """txt text md markdown rst csv tsv json jsonl ndjson yaml yml toml ini cfg conf log ics ifb
    vcf vcard js mjs ts py rb pl php sh bash zsh ps1 bat c h cc cpp hpp java kt go rs swift sql
    tex latex bib srt vtt rtf ps eps diff patch asc org adoc properties env"""
)
_HTML_EXTENSIONS = frozenset({"html", "htm", "xhtml", "mht", "mhtml"})
_XML_EXTENSIONS = frozenset({"xml", "rels", "svg", "xsl", "xslt", "plist", "opf", "ncx", "kml", "gpx"})
_MESSAGE_EXTENSIONS = frozenset({"eml", "msg822", "mbox"})
# Python's own codecs that are not mail charsets: a client would show such text undecoded.
_NON_MAIL_CODECS = frozenset({"unicode_escape", "raw_unicode_escape", "idna", "punycode", "undefined"})

_SAFE_TYPES = _words(
    """text/plain text/html text/enriched text/richtext text/calendar text/csv text/xml text/vcard
    text/x-vcard text/markdown text/rfc822-headers text/x-diff text/x-patch
    multipart/mixed multipart/alternative multipart/related multipart/signed multipart/encrypted
    multipart/report multipart/digest multipart/parallel multipart/appledouble
    message/rfc822 message/global message/delivery-status message/disposition-notification
    message/partial message/external-body message/feedback-report
    application/octet-stream application/pdf application/zip application/json application/xml
    application/pgp-signature application/pgp-encrypted application/pgp-keys
    application/pkcs7-signature application/pkcs7-mime application/x-pkcs7-signature
    application/x-pkcs7-mime application/msword application/rtf application/ms-tnef
    application/vnd.ms-excel application/vnd.ms-powerpoint application/gzip application/x-gzip
    application/x-tar application/x-7z-compressed application/x-rar-compressed application/ics
    application/postscript
    application/vnd.openxmlformats-officedocument.wordprocessingml.document
    application/vnd.openxmlformats-officedocument.spreadsheetml.sheet
    application/vnd.openxmlformats-officedocument.presentationml.presentation
    application/vnd.oasis.opendocument.text application/vnd.oasis.opendocument.spreadsheet
    image/png image/jpeg image/gif image/svg+xml image/webp image/bmp image/tiff
    audio/mpeg audio/basic audio/wav video/mp4"""
)
_SAFE_MAIN_TYPES = frozenset(
    {"text", "multipart", "message", "application", "image", "audio", "video", "font", "model"}
)
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
_META_CHARSET = re.compile(rb"<meta[^>]+charset\s*=\s*[\"']?\s*([A-Za-z0-9_:.+-]+)", re.IGNORECASE)


def safe_type(content_type: str) -> str:
    """A content type fit for a location string (sender-chosen types are not echoed)."""
    if content_type in _SAFE_TYPES:
        return content_type
    main = content_type.partition("/")[0]
    return f"{main}/other" if main in _SAFE_MAIN_TYPES else "unknown type"


def _extension(filename: str) -> str:
    base = filename.replace("\\", "/").rpartition("/")[2]
    return base.rpartition(".")[2].lower() if "." in base else ""


def is_media(content_type: str) -> bool:
    return content_type.partition("/")[0] in ("image", "audio", "video") and content_type not in _XML_TYPES


def meta_charset(data: bytes) -> str | None:
    found = _META_CHARSET.search(data[:4096])
    return found.group(1).decode("ascii") if found else None


def looks_like_text(data: bytes) -> bool:
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return True
    if b"\x00" in data:
        return False
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return len(_CONTROL_CHARS.findall(text)) * 100 <= len(text)


_WIDE_CODECS = ("utf_16", "utf_32")
_BINARY_CONTROLS = bytes(range(32)).translate(None, b"\t\n\r\f\v\x1b")  # ESC: ISO-2022 text


def is_binary(data: bytes, charset: str | None) -> bool:
    """Bytes no charset makes text of: NUL bytes (outside UTF-16/32), or mostly control characters."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or (mail_codec(charset) or "").startswith(
        _WIDE_CODECS
    ):
        return False
    if b"\x00" in data:
        return True
    sample = data[:65536]
    return len(sample) - len(sample.translate(None, _BINARY_CONTROLS)) > len(sample) // 20


def classify(content_type: str, filename: str, data: bytes) -> str:
    """What a body is, from its declared type, then its file name, then its first bytes."""
    extension = _extension(filename)
    if content_type in _HTML_TYPES:
        return "html"
    if content_type == "text/rfc822-headers":
        return "headers"
    if content_type in _XML_TYPES or content_type.endswith("+xml"):
        return "xml"
    if (
        content_type.startswith("text/")
        or content_type in _TEXT_APPLICATION_TYPES
        or content_type.endswith("+json")
    ):
        return "text"
    if content_type in _SIGNATURE_TYPES:
        return "signature"
    if content_type in ("message/rfc822", "message/global"):
        return "message"
    if content_type in _SMIME_TYPES:
        return "smime"
    if content_type in _ENCRYPTED_TYPES:
        return "encrypted"
    # A name is a claim: binary bytes called "notes.txt" are still binary (the recipient can rename them).
    named_text = (
        extension in _HTML_EXTENSIONS or extension in _XML_EXTENSIONS or extension in _TEXT_EXTENSIONS
    )
    if named_text and not looks_like_text(data):
        return "binary"
    if extension in _HTML_EXTENSIONS:
        return "html"
    if extension in _XML_EXTENSIONS:
        return "xml"
    if extension in _MESSAGE_EXTENSIONS:
        return "message"
    if extension in _TEXT_EXTENSIONS:
        return "text"
    if extension in ("p7m", "p7c"):
        return "smime"
    if extension in ("gpg", "pgp"):
        return "encrypted"
    if extension in ("p7s", "sig"):
        return "signature"
    if looks_like_text(data):
        return "text"
    return "binary"
