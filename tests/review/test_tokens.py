"""Reply tokens and review addresses: unguessable, bound to the address kind, read back exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.policy.engine import CompiledPolicy, compile_policy
from gateway.policy.loader import parse_policy_text
from gateway.review.tokens import is_review_address, new_token, reply_address, review_domain, token_of
from gateway.settings import ReviewSettings
from gateway.state.holds import token_hash

POLICY = """\
organisation:
  conduct_address: conduct@example.org
  members:
    - name: Ada Quill
      addresses: [ada@example.org]
rules:
  - rule: conduct-cc
    action: rewrite
"""


@pytest.fixture(scope="module")
def policy() -> CompiledPolicy:
    return compile_policy(parse_policy_text(POLICY, Path("p.yaml")), POLICY.encode())


def test_a_new_token_is_200_bits_of_lower_case_base32_and_never_repeats() -> None:
    tokens = {new_token() for _ in range(200)}
    assert len(tokens) == 200
    alphabet = set("abcdefghijklmnopqrstuvwxyz234567")
    assert all(len(token) == 40 and set(token) <= alphabet for token in tokens)


def test_the_reply_address_uses_the_conduct_domain_unless_a_domain_is_set(policy: CompiledPolicy) -> None:
    token = new_token()
    assert reply_address(ReviewSettings(), policy, token) == f"review+{token}@example.org"
    chosen = ReviewSettings(address_domain="Review.Example.NET", local_part="decide")
    assert review_domain(chosen, policy) == "review.example.net"
    assert reply_address(chosen, policy, token) == f"decide+{token}@review.example.net"


@given(upper=st.booleans())
def test_the_token_of_a_reply_address_is_read_back_whatever_its_case(upper: bool) -> None:
    settings = ReviewSettings()
    token = new_token()
    address = f"review+{token.upper() if upper else token}@example.org"
    assert token_of(address, settings) == token
    assert token_hash(token_of(address, settings) or "") == token_hash(token.upper())


@pytest.mark.parametrize(
    "address",
    [
        pytest.param("review+{t}x@example.org", id="one-character-too-many"),
        pytest.param("review+{s}@example.org", id="one-character-short"),
        pytest.param("review+{s}1@example.org", id="not-base32"),
        pytest.param("review@example.org", id="no-token"),
        pytest.param("reviews+{t}@example.org", id="other-local-part"),
    ],
)
def test_an_altered_token_is_no_token(address: str) -> None:
    token = new_token()
    assert token_of(address.format(t=token, s=token[:-1]), ReviewSettings()) is None


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        pytest.param("review@example.org", True, id="bare"),
        pytest.param("Review+anything@EXAMPLE.org", True, id="any-token-any-case"),
        pytest.param("review+x@example.net", False, id="other-domain"),
        pytest.param("reviewer@example.org", False, id="longer-local-part"),
        pytest.param("ada@example.org", False, id="a-member"),
    ],
)
def test_which_addresses_are_review_addresses(policy: CompiledPolicy, address: str, expected: bool) -> None:
    assert is_review_address(address, ReviewSettings(), policy) is expected
