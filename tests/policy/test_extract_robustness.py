"""Damaged files of every format never make a reader raise: what cannot be read fails closed.

Hypothesis truncates valid files and overwrites bytes in them; each reader must return (texts,
files, unreadable parts) and never raise, so a library failure can never become a 451 or a
traceback, and the whole message still decodes without the decoder's last-resort refusal.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.policy.extract import documents as reader
from gateway.policy.extract.parts import Budget
from gateway.policy.extract.sniff import Format, sniff
from gateway.policy.mime import parse_message
from tests.policy import documents
from tests.policy.attached import attach

SAMPLES = {
    "pdf": documents.pdf([documents.pdf_text_stream("Jin Park")], info={"Author": "Mei Li"}),
    "ascii-pdf": documents.pdf(
        [documents.pdf_text_stream("Jin Park")], filters=("ASCII85Decode", "FlateDecode")
    ),
    "docx": documents.docx("Jin Park", table_cell="x", creator="y"),
    "odt": documents.odt("Jin Park", creator="y"),
    "rtf": documents.rtf(r"{\b J}in " + documents.rtf_hex("Park") + documents.rtf_unicode(" x")),
    "tnef": documents.tnef(subject="s", body="Jin Park", attachments=[("a.txt", b"x")]),
    "msg": documents.outlook_msg(subject="Jin Park", body="b"),
    "ics": documents.ics(documents.fold('ATTENDEE;CN="Park, Jin":mailto:x@example.net', 9)),
    "vcf": documents.vcf("N:Park;Jin;;;", "PHOTO;ENCODING=b:iVBORw0KGgo="),
    "zip": documents.zip_file({"a.txt": b"Jin Park", "b.zip": documents.zip_file({"c.txt": b"x"})}),
    "tar.gz": documents.tar_file({"a.txt": b"Jin Park"}),
}


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    data = bytearray(SAMPLES[draw(st.sampled_from(sorted(SAMPLES)))])
    if draw(st.booleans()):
        del data[draw(st.integers(8, max(8, len(data) - 1))) :]
    for _ in range(draw(st.integers(0, 6))):
        position = draw(st.integers(0, len(data) - 1))
        data[position : position + 4] = draw(st.binary(min_size=1, max_size=4))
    return bytes(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damaged())
def test_readers_never_raise_on_damaged_files(data: bytes) -> None:
    found = sniff(data)
    if found in reader.DOCUMENTS:
        result = reader.read(data, found, "file", Budget())
        # Each reader fails closed by itself: the dispatcher's last-resort net is for bugs.
        assert reader.LAST_RESORT not in [part.reason for part in result.unreadable]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damaged())
def test_a_message_with_a_damaged_attachment_still_decodes(data: bytes) -> None:
    parsed = parse_message(attach(data))
    assert parsed.ambiguities == ()


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_sample_is_sniffed_as_a_document(name: str) -> None:
    assert sniff(SAMPLES[name]) in reader.DOCUMENTS - {Format.OTHER_ARCHIVE}
