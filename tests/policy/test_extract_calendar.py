"""Calendar invitations and contact cards: unfolded, unescaped, structured names read as names."""

from __future__ import annotations

import base64

import pytest

from tests.policy import documents
from tests.policy.attached import names, read, unreadable


@pytest.mark.parametrize(
    ("data", "name"),
    [
        pytest.param(
            documents.ics(documents.fold("SUMMARY:Meeting with Jin Park", 13)), "Jin Park", id="ics-folded"
        ),
        pytest.param(
            documents.ics(
                documents.fold('ATTENDEE;CN="Park, Jin";ROLE=REQ-PARTICIPANT:mailto:x@example.net', 7)
            ),
            "Jin Park",
            id="ics-cn-surname-first-folded",
        ),
        pytest.param(
            documents.ics("ORGANIZER;CN=Jin Park:mailto:x@example.net"), "Jin Park", id="ics-organizer"
        ),
        pytest.param(
            documents.ics(r"DESCRIPTION:Notes\, from Jin\nPark"), "Jin Park", id="ics-escaped-newline"
        ),
        pytest.param(documents.vcf("N:Park;Jin;;;"), "Jin Park", id="vcard-structured-name"),
        pytest.param(documents.vcf("N:Li;Mei;;Dr.;"), "Mei Li", id="vcard-structured-name-with-prefix"),
        pytest.param(documents.vcf("FN:Park\\, Jin"), "Jin Park", id="vcard-fn-surname-first"),
        pytest.param(documents.vcf(documents.fold("FN:Jin Park", 5)), "Jin Park", id="vcard-folded"),
        pytest.param(
            documents.vcf(
                "FN;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:=D0=90=D0=BD=D0=BD=D0=B0 =",
                "=D0=9F=D0=B5=D1=82=D1=80=D0=BE=D0=B2=D0=B0",
            ),
            "Анна Петрова",
            id="vcard-2.1-quoted-printable-soft-break",
        ),
        pytest.param(
            documents.vcf("item1.X-ABLABEL:Park, Jin"), "Jin Park", id="vcard-group-prefix-and-label"
        ),
    ],
)
def test_names_in_calendars_and_cards_are_found(data: bytes, name: str) -> None:
    for declared in ("text/calendar", "application/octet-stream"):
        assert name in names(read(data, declared, "invite.ics"))


def test_an_inline_photo_is_media() -> None:
    photo = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20).decode()
    parsed = read(documents.vcf(f"PHOTO;ENCODING=b;TYPE=PNG:{photo}", "FN:x"))
    assert unreadable(parsed) == [("media", "it is an image")]


def test_an_attached_file_in_an_invitation_is_read() -> None:
    inner = base64.b64encode(b"Minutes: Jin Park spoke").decode()
    parsed = read(documents.ics(f"ATTACH;ENCODING=BASE64;VALUE=BINARY;FMTTYPE=text/plain:{inner}"))
    assert names(parsed) == {"Jin Park"}
