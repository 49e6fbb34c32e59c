"""Address header fields are read without ever raising: a malformed one is named, not crashed on."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.policy.address_header import MalformedAddressHeader, address_problem, read_mailboxes


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        pytest.param("Ada <ada@example.org>", None, id="plain"),
        pytest.param('"Quill, Ada" <ada@example.org>, b@example.org', None, id="quoted-comma"),
        pytest.param('"A \\" quote" <a@example.org>', None, id="escaped-quote"),
        pytest.param("a@example.org (Ada (the (chair)))", None, id="nested-comment"),
        pytest.param("list: a@example.org, b@example.org;", None, id="group"),
        pytest.param('"<not an address" <a@example.org>', None, id="bracket-in-quotes"),
        pytest.param("John Doe <jdoe@", 'an address is not closed with ">"', id="unclosed-address"),
        pytest.param("Name <", 'an address is not closed with ">"', id="open-angle"),
        pytest.param(
            "a@example.org>", 'a ">" closes an address that was never opened with "<"', id="stray-close"
        ),
        pytest.param("<<a@example.org>>", 'an address has a "<" inside another "<...>"', id="angle-in-angle"),
        pytest.param('"Ada <ada@example.org>', "a quoted name is not closed", id="unclosed-quote"),
        pytest.param(
            "(Ada <ada@example.org>", "a comment (in parentheses) is not closed", id="unclosed-comment"
        ),
        pytest.param(
            "Ada) <ada@example.org>", 'a ")" closes a comment that was never opened', id="stray-paren"
        ),
        pytest.param(
            "(" * 21 + ")" * 21 + "a@b.test",
            "comments in parentheses are nested more than 20 deep",
            id="deep",
        ),
    ],
)
def test_structural_faults_are_named(value: str, problem: str | None) -> None:
    assert address_problem(value) == problem


def test_nesting_that_would_exhaust_the_stack_is_a_malformed_header_not_a_recursion_error() -> None:
    with pytest.raises(MalformedAddressHeader, match="nested more than 20 deep"):
        read_mailboxes(("(" * 5000 + ")" * 5000 + "a@example.org",))


def test_well_formed_fields_are_read_as_the_standard_library_reads_them() -> None:
    assert read_mailboxes(('"Quill, Ada" <ada@example.org>', "b@example.org (Bea)")) == [
        ("Quill, Ada", "ada@example.org"),
        ("Bea", "b@example.org"),
    ]


@given(st.lists(st.sampled_from([*'<>@"()\\,;:[]. \tab', "=?utf-8?q?x?=", "é", "x@y.test"]), max_size=40))
def test_any_field_is_read_or_named_malformed_never_raises_otherwise(pieces: list[str]) -> None:
    value = "".join(pieces)
    try:
        read_mailboxes((value,))
    except MalformedAddressHeader as malformed:
        assert str(malformed)
