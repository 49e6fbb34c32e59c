"""Attachments end to end: each type, sent by a real client through the gateway towards Postfix.

For one example of each attachment type (PDF, an all-ASCII PDF, Word, Excel, PowerPoint,
OpenDocument, RTF, winmail.dat, Outlook .msg, calendar invitation, contact card, ZIP, tar.gz),
a protected name inside it, on its way to an outsider, is refused with 550 and nothing is relayed.
An attachment the gateway cannot read (a picture, an encrypted PDF, a password-protected archive)
is held for review: 250 with "Held for review", and nothing reaches the outsider.
"""

from __future__ import annotations

import base64
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.clients import Account, new_password
from tests.e2e.messages import token, unique_address
from tests.e2e.postfix import PostfixInstance
from tests.e2e.test_policy_e2e import (
    CONDUCT,
    PolicyGateway,
    arrived,
    assert_no_protected_identity,
    compose,
    never_relayed,
    start_gateway,
)
from tests.e2e.tls import TlsMaterial
from tests.policy import documents

pytestmark = pytest.mark.e2e

POLICY = Path(__file__).resolve().parent / "policy-e2e-attachments.yaml"
NAME = "Elif Marchetti"
REVIEWER = "noor.haddad@example.org"

READABLE: dict[str, tuple[Callable[[], bytes], str, str]] = {
    "pdf": (
        lambda: documents.pdf([documents.pdf_text_stream(f"Statement by {NAME}")]),
        "application/pdf",
        "a.pdf",
    ),
    "ascii-pdf": (
        lambda: documents.pdf(
            [documents.pdf_text_stream(f"Statement by {NAME}")], filters=("ASCII85Decode", "FlateDecode")
        ),
        "application/pdf",
        "a.pdf",
    ),
    "docx": (
        lambda: documents.docx("x", creator=NAME),
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "a.docx",
    ),
    "xlsx": (
        lambda: documents.xlsx(NAME),
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "a.xlsx",
    ),
    "pptx": (
        lambda: documents.pptx(NAME),
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "a.pptx",
    ),
    "odt": (lambda: documents.odt(f"By {NAME}"), "application/vnd.oasis.opendocument.text", "a.odt"),
    "rtf": (lambda: documents.rtf(documents.rtf_hex(NAME)), "application/rtf", "a.rtf"),
    "tnef": (lambda: documents.tnef(body=f"{NAME} wrote"), "application/ms-tnef", "winmail.dat"),
    "msg": (lambda: documents.outlook_msg(subject=f"About {NAME}"), "application/vnd.ms-outlook", "a.msg"),
    "ics": (
        lambda: documents.ics(documents.fold('ATTENDEE;CN="Marchetti, Elif":mailto:x@example.net', 11)),
        "text/calendar",
        "invite.ics",
    ),
    "vcf": (lambda: documents.vcf("N:Marchetti;Elif;;;", "FN:x"), "text/vcard", "card.vcf"),
    "zip": (lambda: documents.zip_file({"notes.txt": f"{NAME} called".encode()}), "application/zip", "a.zip"),
    "tar.gz": (
        lambda: documents.tar_file({"notes.txt": f"{NAME} called".encode()}),
        "application/gzip",
        "a.tgz",
    ),
}
UNREADABLE: dict[str, tuple[Callable[[], bytes], str, str]] = {
    "image": (lambda: b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01", "image/png", "screenshot.png"),
    "encrypted-pdf": (
        lambda: documents.encrypted_pdf(documents.pdf([documents.pdf_text_stream(NAME)])),
        "application/pdf",
        "a.pdf",
    ),
    "7z": (lambda: b"7z\xbc\xaf\x27\x1c\x00\x04" + bytes(range(64)), "application/x-7z-compressed", "a.7z"),
}


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory,
    tls_material: TlsMaterial,
    postfix: PostfixInstance,
    member: Account,
) -> Iterator[PolicyGateway]:
    process = start_gateway(tmp_path_factory.mktemp("attachments"), POLICY, tls_material, postfix, member)
    # Held mail needs a second member who can review it: give Noor an account, picked up on SIGHUP.
    process.add_user(REVIEWER, new_password())
    os.kill(process.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "event=reloaded" not in process.current_log() and time.monotonic() < deadline:
        time.sleep(0.05)
    yield PolicyGateway(process, tls_material, member)
    process.close()


def with_attachment(marker: str, outsider: str, data: bytes, content_type: str, filename: str) -> bytes:
    boundary = f"mixed-{marker}"
    encoded = base64.encodebytes(data).decode().replace("\n", "\r\n")
    body = "\r\n".join(
        [
            f"--{boundary}",
            "Content-Type: text/plain; charset=utf-8",
            "",
            f"The file is attached ({marker}).",
            f"--{boundary}",
            f'Content-Type: {content_type}; name="{filename}"',
            "Content-Transfer-Encoding: base64",
            f'Content-Disposition: attachment; filename="{filename}"',
            "",
            encoded,
            f"--{boundary}--",
            "",
        ]
    )
    return compose(
        marker, to=f"<{outsider}>", mime=(f'Content-Type: multipart/mixed; boundary="{boundary}"',), body=body
    )


@pytest.mark.parametrize("kind", sorted(READABLE))
def test_a_protected_name_in_an_attachment_is_refused(
    gateway: PolicyGateway, postfix: PostfixInstance, kind: str
) -> None:
    build, content_type, filename = READABLE[kind]
    marker, control, outsider = token(), token(), unique_address(f"att-{kind}")
    result = gateway.send(
        with_attachment(marker, outsider, build(), content_type, filename), [outsider, CONDUCT]
    )

    assert result.final.startswith("550 5.7.1"), result.run.transcript
    assert any("reporter-protection" in line for line in result.replies), result.run.transcript
    assert_no_protected_identity(result.reply_text)
    # The same message with a harmless attachment goes through; the refused one never did.
    harmless = documents.zip_file({"notes.txt": b"nothing to see"})
    ok = gateway.send(
        with_attachment(control, outsider, harmless, "application/zip", "a.zip"), [outsider, CONDUCT]
    )
    assert ok.final.startswith("250"), ok.run.transcript
    arrived(postfix, outsider, control)
    never_relayed(postfix, marker)


@pytest.mark.parametrize("kind", sorted(UNREADABLE))
def test_an_unreadable_attachment_is_held_for_review(
    gateway: PolicyGateway, postfix: PostfixInstance, kind: str
) -> None:
    build, content_type, filename = UNREADABLE[kind]
    marker, control, outsider = token(), token(), unique_address(f"held-{kind}")
    result = gateway.send(
        with_attachment(marker, outsider, build(), content_type, filename), [outsider, CONDUCT]
    )

    assert result.final.startswith("250"), result.run.transcript
    assert "Held for review" in result.reply_text, result.run.transcript
    assert "UNINSPECTABLE_CONTENT" in result.reply_text, result.run.transcript
    ok = gateway.send(compose(control, to=f"<{outsider}>"), [outsider, CONDUCT])
    assert ok.final.startswith("250"), ok.run.transcript
    arrived(postfix, outsider, control)
    assert not [
        m
        for m in postfix.messages()
        if m.delivered_to == outsider.lower() and marker in m.raw.decode(errors="replace")
    ]
