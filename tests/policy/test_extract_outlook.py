"""Outlook files: TNEF (winmail.dat) and .msg are read; Office 97-2003 files are uninspectable."""

from __future__ import annotations

import struct

import pytest

from tests.policy import documents
from tests.policy.attached import names, places, read, unreadable


@pytest.mark.parametrize(
    ("data", "where"),
    [
        pytest.param(documents.tnef(subject="About Jin Park"), "the message", id="tnef-subject"),
        pytest.param(documents.tnef(body="Jin Park wrote"), "the message", id="tnef-body"),
        pytest.param(
            documents.tnef(attachments=[("notes.txt", b"Jin Park wrote")]),
            "attachment 1",
            id="tnef-attachment",
        ),
        pytest.param(
            documents.tnef(attachments=[("Jin Park.txt", b"x")]),
            "the name of attachment 1",
            id="tnef-file-name",
        ),
        pytest.param(
            documents.tnef(attachments=[("s.docx", documents.docx("Jin Park"))]),
            "file 2 of the document in attachment 1",
            id="tnef-attached-docx",
        ),
        pytest.param(
            documents.outlook_msg(subject="About Jin Park"),
            "section 1 of the Outlook message",
            id="msg-subject",
        ),
        pytest.param(
            documents.outlook_msg(sender_name="Jin Park"), "section 1 of the Outlook message", id="msg-sender"
        ),
    ],
)
def test_names_in_outlook_files_are_found(data: bytes, where: str) -> None:
    parsed = read(data, "application/ms-tnef", "winmail.dat")
    assert f"{where} in part 2 (application/ms-tnef)" in places(parsed, "Jin Park")
    assert unreadable(parsed) == []


def test_a_truncated_tnef_is_uninspectable() -> None:
    data = documents.tnef(body="Jin Park wrote")[:-5]
    assert unreadable(read(data)) == [
        ("binary", "an Outlook TNEF file (winmail.dat) the gateway cannot read")
    ]


def test_a_huge_mapi_count_does_not_loop() -> None:
    # A property list claiming four billion properties in a few bytes: refused at once.
    props = struct.pack("<I", 0xFFFFFFFF) + b"\x00" * 8
    data = bytearray(documents.tnef(subject="x"))
    data += (
        struct.pack("<BHHI", 1, 0x9003, 0x0006, len(props)) + props + struct.pack("<H", sum(props) & 0xFFFF)
    )
    assert unreadable(read(bytes(data))) == [
        ("binary", "an Outlook TNEF file (winmail.dat) the gateway cannot read")
    ]


def test_an_old_office_file_is_uninspectable() -> None:
    data = documents.compound_file({"WordDocument": b"Jin Park"})
    parsed = read(data, "application/msword", "statement.doc")
    assert unreadable(parsed) == [
        ("binary", "an Office 97-2003 document (.doc, .xls, .ppt), a format the gateway cannot read")
    ]


def test_a_damaged_compound_file_is_uninspectable() -> None:
    data = documents.outlook_msg(subject="x")[:700]
    assert unreadable(read(data)) == [("binary", "an Outlook or Office file the gateway cannot read")]


def test_msg_body_and_tnef_body_are_read() -> None:
    assert names(read(documents.outlook_msg(body="Mei Li called"))) == {"Mei Li"}
