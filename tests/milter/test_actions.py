"""A decision as milter edits: applied to the MTA's copy, they give exactly what the gateway relays."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from kilter.protocol import AddRecipient, InsertHeader, RemoveRecipient, ReplaceBody, ReplyCode

from gateway.milter import actions
from gateway.milter.session import MAX_CHUNK, Envelope
from gateway.replies import Reply
from tests.milter.mta import MtaCopy

NAMES = ["To", "Cc", "Subject", "X-Conduct-Gateway", "Received", "DKIM-Signature", "Message-ID"]
values = st.binary(min_size=0, max_size=20).map(
    lambda raw: b" " + raw.replace(b"\r", b"").replace(b"\n", b"")
)
fields = st.lists(st.tuples(st.sampled_from(NAMES), values), max_size=8)


def by_name(headers: list[tuple[str, bytes]]) -> dict[str, list[bytes]]:
    grouped: dict[str, list[bytes]] = {}
    for name, value in headers:
        grouped.setdefault(name.lower(), []).append(value)
    return grouped


@given(before=fields, after=fields)
def test_header_edits_turn_any_header_into_any_other(
    before: list[tuple[str, bytes]], after: list[tuple[str, bytes]]
) -> None:
    copy = MtaCopy(list(before), b"", []).apply(actions.header_edits(before, after))
    assert by_name(copy.headers) == by_name(after)


@given(kept=fields, added=st.lists(st.tuples(st.just("X-Conduct-Gateway"), values), min_size=1, max_size=2))
def test_fields_put_on_top_stay_on_top(kept: list[tuple[str, bytes]], added: list[tuple[str, bytes]]) -> None:
    kept = [(name, value) for name, value in kept if name != "X-Conduct-Gateway"]
    edits = actions.header_edits(kept, [*added, *kept])
    assert all(isinstance(edit, InsertHeader) for edit in edits)
    assert MtaCopy(list(kept), b"", []).apply(edits).headers == [*added, *kept]


@given(
    before=fields,
    inserted=st.lists(
        st.tuples(st.integers(min_value=0, max_value=10), st.sampled_from(NAMES), values), max_size=4
    ),
    changed=st.lists(st.tuples(st.integers(min_value=0, max_value=10), values), max_size=3),
)
def test_inserted_and_changed_fields_end_up_exactly_where_the_gateway_put_them(
    before: list[tuple[str, bytes]],
    inserted: list[tuple[int, str, bytes]],
    changed: list[tuple[int, bytes]],
) -> None:
    after = list(before)
    for index, value in changed:
        if after:
            name, _ = after[index % len(after)]
            after[index % len(after)] = (name, value)
    for index, name, value in inserted:
        after.insert(min(index, len(after)), (name, value))
    copy = MtaCopy(list(before), b"", []).apply(actions.header_edits(before, after))
    assert copy.headers == after


def test_identical_headers_need_no_edit() -> None:
    headers = [("To", b" a@example.net"), ("Subject", b" x\r\n\ty")]
    assert actions.header_edits(headers, [("To", b" a@example.net"), ("Subject", b" x\n\ty")]) == []


@given(
    before=st.lists(st.sampled_from(["a@example.net", "B@example.net", "conduct@example.org"]), unique=True),
    after=st.lists(st.sampled_from(["a@example.net", "b@example.net", "conduct@example.org"]), unique=True),
)
def test_recipient_edits_add_and_remove_without_regard_to_case(before: list[str], after: list[str]) -> None:
    copy = MtaCopy([], b"", list(before)).apply(actions.recipient_edits(before, after))
    assert sorted(r.lower() for r in copy.rcpt_tos) == sorted(r.lower() for r in after)


def test_only_a_changed_body_is_replaced_in_chunks_the_mta_takes() -> None:
    head = b"From: a@example.org\r\nTo: b@example.net\r\n\r\n"
    body = b"x" * (MAX_CHUNK * 2 + 10)
    envelope = Envelope(
        "a@example.org",
        ("b@example.net",),
        {},
        (("From", b" a@example.org"), ("To", b" b@example.net")),
        body,
    )
    assert actions.message_edits(envelope, head + body, ["b@example.net"]) == []
    bannered = b"[+ Cleo]\r\n" + body
    edits = actions.message_edits(envelope, head + bannered, ["b@example.net", "c@example.net"])
    chunks = [edit for edit in edits if isinstance(edit, ReplaceBody)]
    assert [len(bytes(c.content)) for c in chunks] == [MAX_CHUNK, MAX_CHUNK, len(bannered) - 2 * MAX_CHUNK]
    assert b"".join(bytes(c.content) for c in chunks) == bannered
    assert [e for e in edits if isinstance(e, AddRecipient | RemoveRecipient)] == [
        AddRecipient("<c@example.net>")
    ]


def test_a_refusal_is_the_gateways_reply_with_percent_signs_doubled_and_a_nul() -> None:
    reply = Reply(550, "5.7.1", ("Message not sent: 100% sure", "Reference: Q1"))
    code = actions.reply_code(reply)
    assert isinstance(code, ReplyCode)
    assert bytes(code.content) == b"550-5.7.1 Message not sent: 100%% sure\r\n550 5.7.1 Reference: Q1\0"


def test_a_hold_quarantines_the_copy_as_it_will_be_released() -> None:
    envelope = Envelope("a@example.org", ("b@example.net",), {}, (("To", b" b@example.net"),), b"Hi\r\n")
    release = b"X-Conduct-Gateway: ref=Q1; changed=none\r\nTo: b@example.net\r\n\r\nHi\r\n"
    edits = actions.hold(envelope, release, ("b@example.net",), "Q1")
    copy = MtaCopy.of(envelope.content, envelope.rcpt_tos).apply(edits)
    assert copy.content == release
    assert copy.quarantined is not None and "Q1" in copy.quarantined


def test_postfix_counts_the_received_field_it_hides_in_insert_positions() -> None:
    headers = (("From", b" a@example.org"), ("To", b" b@example.net"))
    envelope = Envelope("a@example.org", ("b@example.net",), {"v": "Postfix 3.7.11"}, headers, b"Hi\r\n")
    content = (
        b"X-Conduct-Gateway: ref=Q1\r\nFrom: a@example.org\r\nTo: b@example.net\r\n"
        b"Cc: c@example.org\r\n\r\nHi\r\n"
    )
    edits = actions.message_edits(envelope, content, ["b@example.net"])
    assert [(e.index, e.name) for e in edits if isinstance(e, InsertHeader)] == [
        (1, "X-Conduct-Gateway"),
        (4, "Cc"),
    ]
    received = [("Received", b" by mta"), *envelope.headers]  # the MTA's copy, with its own field
    assert MtaCopy(received, b"", []).apply(edits).headers == [
        ("Received", b" by mta"),
        ("X-Conduct-Gateway", b" ref=Q1"),
        *envelope.headers,
        ("Cc", b" c@example.org"),
    ]
