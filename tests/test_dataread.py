"""Reading From and Sender: the plain-shape reader agrees with the email package wherever it answers."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway import replies
from gateway.intake.dataread import (
    BadMessage,
    _addresses,
    _fields,
    _plain_addresses,
    _structured,
    read_headers,
)

ATEXT = "abcXYZ019!#$%&'*+/=?^_`{|}~-"
TRICKY = ATEXT + ' .@<>",\t\\()[]:;é\r\n'


def parser_addresses(value: bytes) -> tuple[str, ...]:
    return _addresses(_structured("From", value))


words = st.text(alphabet=ATEXT + ".", min_size=1, max_size=6)
addr_specs = st.builds(lambda local, domain: f"{local}@{domain}", words, words)
display_names = st.one_of(
    st.just(""),
    st.lists(words, min_size=1, max_size=3).map(" ".join),
    st.text(alphabet=TRICKY, max_size=8).map(lambda text: f'"{text}"'),
)
mailboxes = st.one_of(
    addr_specs,
    st.builds(lambda name, addr: f"{name} <{addr}>", display_names, addr_specs),
    st.builds(lambda name, addr: f"{name}<{addr}>", display_names, addr_specs),
)
field_values = st.one_of(
    st.lists(mailboxes, min_size=1, max_size=3).map(", ".join),
    st.text(alphabet=TRICKY, max_size=30),
    st.builds(lambda a, b: a + b, st.lists(mailboxes, min_size=1, max_size=2).map(",".join), st.text(TRICKY)),
).map(lambda text: text.encode("utf-8"))


@settings(max_examples=3000, deadline=None)
@given(field_values)
@example(b"a..b@example.org")
@example(b".a@example.org")
@example(b"=?utf-8?q?x?= <a@example.org>")
@example(b"Name <a@example.org> (comment)")
@example(b"a@example.org,")
@example(b'"a,b" <x@example.org>, y@example.org')
def test_the_plain_reader_agrees_with_the_email_package(value: bytes) -> None:
    plain = _plain_addresses(value)
    if plain is not None:
        assert plain == parser_addresses(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(b"alice@example.org", ("alice@example.org",), id="bare"),
        pytest.param(b" Alice Smith <Alice@Example.ORG> ", ("alice@example.org",), id="named"),
        pytest.param(b'"bob@example.org" <mallory@example.net>', ("mallory@example.net",), id="quoted-trick"),
        pytest.param(b"a@example.org, b@example.org", ("a@example.org", "b@example.org"), id="list"),
        pytest.param(b"J. Smith <j@example.org>", None, id="obsolete-phrase"),
        pytest.param(b"undisclosed-recipients:;", None, id="group"),
        pytest.param(b"=?utf-8?q?Al=C3=AFce?= <a@example.org>", None, id="encoded-word"),
        pytest.param("Zoë <z@example.org>".encode(), None, id="utf-8"),
        pytest.param(b"a@example.org\r\n b@example.org", None, id="folded"),
    ],
)
def test_plain_shapes_are_read_here_and_others_left_to_the_parser(
    value: bytes, expected: tuple[str, ...] | None
) -> None:
    assert _plain_addresses(value) == expected


@pytest.mark.parametrize(
    ("header", "refusal"),
    [
        pytest.param(b"From: undisclosed-recipients:;\r\n", replies.HEADER_FROM_UNREADABLE, id="group"),
        pytest.param(b"From: @example.org\r\n", replies.HEADER_FROM_UNREADABLE, id="no-local-part"),
        pytest.param(b"From: alice\r\n", replies.HEADER_FROM_UNREADABLE, id="no-domain"),
        pytest.param(
            b"From: a@example.org\r\nSender: nobody\r\n",
            replies.HEADER_FROM_UNREADABLE,
            id="sender-unreadable",
        ),
        pytest.param(
            b"From: a@example.org\r\nFrom: b@example.org\r\n", replies.HEADER_FROM_DUPLICATE, id="two"
        ),
    ],
)
def test_unreadable_or_repeated_originators_are_refused(header: bytes, refusal: replies.Reply) -> None:
    with pytest.raises(BadMessage) as refused:
        read_headers(header + b"\r\nbody\r\n")
    assert refused.value.response == refusal


def test_plain_and_parsed_fields_give_the_same_facts() -> None:
    facts = read_headers(
        b"From: Alice <Alice@Example.org>\r\nSender: (the list) list@example.org\r\n"
        b"Date: x\r\nMessage-ID: <1@x>\r\n\r\nbody\r\n"
    )
    assert facts.from_addresses == ("alice@example.org",)
    assert facts.sender_addresses == ("list@example.org",)
    assert facts.has_date and facts.has_message_id


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        pytest.param(
            b"From: John Doe <jdoe@\r\n", 'an address is not closed with ">"', id="unclosed-address"
        ),
        pytest.param(b"From: Name <\r\n", 'an address is not closed with ">"', id="name-and-open-angle"),
        pytest.param(b'From: "\r\n', "a quoted name is not closed", id="lone-quote"),
        pytest.param(
            b'From:  \t:;\t[\t(@b@>""\r\n', "a comment (in parentheses) is not closed", id="group-junk"
        ),
        pytest.param(b"From: x@[g:@\r\n", "it cannot be read as a list of addresses", id="domain-literal"),
        pytest.param(b"From: .bg:<:a)\r\n", 'a ")" closes a comment that was never opened', id="junk-name"),
        pytest.param(b"From: " + b"(" * 50 + b"\r\n", "comments in parentheses are nested more", id="nested"),
        pytest.param(
            b"From: a@example.org\r\nSender: Name <\r\n", 'an address is not closed with ">"', id="sender"
        ),
    ],
)
def test_a_field_the_parser_cannot_read_is_refused_for_good_naming_it(header: bytes, problem: str) -> None:
    # The email package raises IndexError, AttributeError or RecursionError on these: that used to
    # become "451 Internal error", retried by the client forever.
    with pytest.raises(BadMessage) as refused:
        read_headers(header + b"\r\nbody\r\n")
    response = refused.value.response
    assert (response.code, response.status) == (550, "5.6.0")
    field = "Sender" if b"Sender:" in header else "From"
    assert f"the {field} header is malformed: {problem}" in " ".join(response.lines)


def test_a_field_folded_over_many_lines_is_joined_as_written() -> None:
    folded = b"References: " + b"\r\n ".join(b"<m%d@example.org>" % number for number in range(3)) + b"\r\n"
    assert _fields(folded.split(b"\r\n")[:-1]) == {
        "references": [b" <m0@example.org>\r\n <m1@example.org>\r\n <m2@example.org>"]
    }


def test_an_originator_field_too_long_to_parse_on_the_event_loop_is_refused() -> None:
    # The structured parser grows faster than linearly: 4,000 quoted names took most of a second.
    many = b",\r\n ".join(b'"A" <a@example.org>' for _ in range(4000))
    with pytest.raises(BadMessage) as refused:
        read_headers(b"From: " + many + b"\r\n\r\nbody\r\n")
    assert (
        "the From header is malformed: it is longer than 2000 characters" in refused.value.response.lines[0]
    )
