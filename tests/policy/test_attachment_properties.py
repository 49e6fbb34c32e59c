"""Property: a protected name in any attachment, however declared and encoded, never reaches an outsider.

Hypothesis picks a protected person of the shipped policy, an attachment type (PDF with several
stream filters and split text operators, Word, Excel, PowerPoint, OpenDocument, RTF with escapes,
TNEF, Outlook .msg, iCalendar, vCard, ZIP, tar.gz, gzip, and unreadable kinds: pictures,
encrypted or scanned PDFs, password-protected or 7-Zip archives, Office 97-2003 files, unknown
binary), a declared content type (the right one, a wrong one, application/octet-stream), a
transfer encoding (base64, quoted-printable) and a file name (right, misleading, none). Sent to
an outsider under the shipped policy, the message is never delivered: a readable attachment is
refused for the name in it (PROTECTED_IDENTITY), an unreadable one is held (UNINSPECTABLE_CONTENT).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.policy.engine import CompiledPolicy, compile_policy, evaluate
from gateway.policy.loader import read_policy
from gateway.policy.mime import parse_message
from gateway.policy.model import Envelope, Outcome, ThreadFacts
from tests.policy import documents
from tests.policy.attached import attach

REPO = Path(__file__).resolve().parents[2]
ADA = "ada.quill@example.org"
OUTSIDE = Envelope(
    mail_from=ADA, rcpt_tos=("mods@forum.example.com", "conduct@example.org"), authenticated_as=ADA
)
PEOPLE = (("Robin", "Castellano"), ("Sam", "Okonkwo-Reyes"))


def _split_tj(given: str, surname: str) -> bytes:
    full = f"{given} {surname}"
    pieces = " ".join(f"({full[i : i + 3]}) Tj" for i in range(0, len(full), 3))
    return f"BT /F1 12 Tf 72 720 Td {pieces} ET".encode("latin-1")


def _rtf_groups(full: str) -> str:
    return "".join(f"{{\\b {char}}}" if index % 3 == 0 else char for index, char in enumerate(full))


# name -> (builder(given, surname), right content type, right extension)
READABLE: dict[str, tuple[Callable[[str, str], bytes], str, str]] = {
    "pdf": (
        lambda g, s: documents.pdf([documents.pdf_text_stream(f"From {g} {s}")]),
        "application/pdf",
        "pdf",
    ),
    "pdf-ascii85": (
        lambda g, s: documents.pdf(
            [documents.pdf_text_stream(f"From {g} {s}")], filters=("ASCII85Decode", "FlateDecode")
        ),
        "application/pdf",
        "pdf",
    ),
    "pdf-split-operators": (lambda g, s: documents.pdf([_split_tj(g, s)]), "application/pdf", "pdf"),
    "pdf-author": (
        lambda g, s: documents.pdf([documents.pdf_text_stream("x")], info={"Author": f"{g} {s}"}),
        "application/pdf",
        "pdf",
    ),
    "docx-body": (
        lambda g, s: documents.docx(f"Statement of {g} {s}"),
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "docx",
    ),
    "docx-table": (
        lambda g, s: documents.docx("x", table_cell=f"{g} {s}"),
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "docx",
    ),
    "docx-creator": (
        lambda g, s: documents.docx("x", creator=f"{g} {s}"),
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "docx",
    ),
    "xlsx": (
        lambda g, s: documents.xlsx(f"{g} {s}"),
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "xlsx",
    ),
    "pptx": (
        lambda g, s: documents.pptx(f"{g} {s}"),
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "pptx",
    ),
    "odt": (lambda g, s: documents.odt(f"By {g} {s}"), "application/vnd.oasis.opendocument.text", "odt"),
    "rtf-hex": (lambda g, s: documents.rtf(documents.rtf_hex(f"{g} {s}")), "application/rtf", "rtf"),
    "rtf-unicode": (lambda g, s: documents.rtf(documents.rtf_unicode(f"{g} {s}")), "application/rtf", "rtf"),
    "rtf-groups": (lambda g, s: documents.rtf(_rtf_groups(f"{g} {s}")), "text/rtf", "rtf"),
    "tnef": (lambda g, s: documents.tnef(body=f"{g} {s} wrote"), "application/ms-tnef", "dat"),
    "tnef-attachment": (
        lambda g, s: documents.tnef(attachments=[("a.docx", documents.docx(f"{g} {s}"))]),
        "application/ms-tnef",
        "dat",
    ),
    "msg": (
        lambda g, s: documents.outlook_msg(subject=f"About {g} {s}"),
        "application/vnd.ms-outlook",
        "msg",
    ),
    "ics": (
        lambda g, s: documents.ics(documents.fold(f'ATTENDEE;CN="{s}, {g}":mailto:a@example.net', 9)),
        "text/calendar",
        "ics",
    ),
    "vcf": (lambda g, s: documents.vcf(f"N:{s};{g};;;", "FN:x"), "text/vcard", "vcf"),
    "zip": (lambda g, s: documents.zip_file({"a.txt": f"{g} {s}".encode()}), "application/zip", "zip"),
    "zip-docx": (
        lambda g, s: documents.zip_file({"a.docx": documents.docx(f"{g} {s}")}),
        "application/zip",
        "zip",
    ),
    "tar.gz": (lambda g, s: documents.tar_file({"a.txt": f"{g} {s}".encode()}), "application/gzip", "tgz"),
}
UNREADABLE: dict[str, tuple[Callable[[str, str], bytes], str, str]] = {
    "png": (lambda g, s: b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + f"{g} {s}".encode(), "image/png", "png"),
    "jpeg": (lambda g, s: b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + f"{g} {s}".encode(), "image/jpeg", "jpg"),
    "encrypted-pdf": (
        lambda g, s: documents.encrypted_pdf(documents.pdf([documents.pdf_text_stream(f"{g} {s}")])),
        "application/pdf",
        "pdf",
    ),
    "scanned-pdf": (lambda g, s: documents.pdf([b""], image_pages=(0,)), "application/pdf", "pdf"),
    "encrypted-zip": (
        lambda g, s: (
            documents.zip_file({"a.txt": f"{g} {s}".encode()})
            .replace(b"PK\x03\x04\x14\x00\x00", b"PK\x03\x04\x14\x00\x01")
            .replace(b"PK\x01\x02\x14\x03\x14\x00\x00", b"PK\x01\x02\x14\x03\x14\x00\x01")
        ),
        "application/zip",
        "zip",
    ),
    "7z": (
        lambda g, s: b"7z\xbc\xaf\x27\x1c\x00\x04" + bytes(range(256)),
        "application/x-7z-compressed",
        "7z",
    ),
    "doc": (lambda g, s: documents.compound_file({"WordDocument": b"x"}), "application/msword", "doc"),
    "binary": (lambda g, s: bytes(range(256)) * 4, "application/octet-stream", "bin"),
}
WRONG_TYPES = ("text/plain", "image/png", "application/pdf", "application/zip", "text/html")


def _shipped_policy() -> CompiledPolicy:
    document, source = read_policy(REPO / "gateway" / "data" / "default-policy.yaml")
    return compile_policy(document, source)


POLICY = _shipped_policy()


def _codes(raw: bytes) -> tuple[Outcome, set[str]]:
    verdict = evaluate(parse_message(raw), OUTSIDE, POLICY, ThreadFacts())
    return verdict.outcome, {decision.finding.code for decision in verdict.decisions}


@st.composite
def attachments(draw: st.DrawFn) -> tuple[bytes, str]:
    """(raw message, the finding code it must get)."""
    given_name, surname = draw(st.sampled_from(PEOPLE))
    readable = draw(st.booleans())
    table = READABLE if readable else UNREADABLE
    kind = draw(st.sampled_from(sorted(table)))
    build, right_type, extension = table[kind]
    declared = draw(st.sampled_from([right_type, "application/octet-stream", *WRONG_TYPES]))
    filename = draw(st.sampled_from([f"statement.{extension}", "notes.txt", "photo.jpg", None]))
    encoding = draw(st.sampled_from(["base64", "quoted-printable"]))
    raw = attach(build(given_name, surname), declared, filename, encoding)
    return raw, "PROTECTED_IDENTITY" if readable else "UNINSPECTABLE_CONTENT"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(attachments())
def test_an_attachment_naming_a_protected_person_never_reaches_an_outsider(
    example: tuple[bytes, str],
) -> None:
    raw, code = example
    outcome, codes = _codes(raw)
    assert code in codes, codes
    assert outcome is (Outcome.REJECT if code == "PROTECTED_IDENTITY" else Outcome.HOLD), codes


@pytest.mark.parametrize("kind", sorted(READABLE))
def test_every_readable_kind_is_read(kind: str) -> None:
    # Each kind once, as declared, so that a failure names the reader that broke.
    build, right_type, extension = READABLE[kind]
    _outcome, codes = _codes(attach(build("Robin", "Castellano"), right_type, f"statement.{extension}"))
    assert "PROTECTED_IDENTITY" in codes
    assert "UNINSPECTABLE_CONTENT" not in codes


@pytest.mark.parametrize("kind", sorted(UNREADABLE))
def test_every_unreadable_kind_is_held(kind: str) -> None:
    build, right_type, extension = UNREADABLE[kind]
    outcome, codes = _codes(attach(build("Robin", "Castellano"), right_type, f"statement.{extension}"))
    assert "UNINSPECTABLE_CONTENT" in codes
    assert outcome is Outcome.HOLD
