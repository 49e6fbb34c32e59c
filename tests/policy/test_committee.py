"""The committee in force: policy members count as inside only while they hold an account."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.policy.committee import Roster, committee_in_force, differences, members_in_force
from gateway.policy.config import Member, PolicyDocument
from gateway.policy.engine import compile_policy
from gateway.policy.loader import parse_policy_text

ADA = Member(name="Ada Quill", addresses=("ada@example.org", "ada.q@mail.example.net"))
BEN = Member(name="Ben Ink", addresses=("ben@example.org",))
CLEO = Member(name="Cleo Reads", addresses=("cleo@example.org",), receive_only=True)
MEMBERS = (ADA, BEN, CLEO)

POLICY = """\
organisation:
  conduct_address: conduct@example.org
  members:
    - name: Ada Quill
      addresses: [ada@example.org, ada.q@mail.example.net]
    - name: Ben Ink
      addresses: [ben@example.org]
    - name: Cleo Reads
      addresses: [cleo@example.org]
      receive_only: true
rules:
  - rule: reporter-protection
    action: reject
"""


def roster(*accounts: tuple[str, tuple[str, ...]]) -> Roster:
    return Roster.of(accounts, origin="users.passwd")


def names(members: tuple[Member, ...]) -> list[str]:
    return [member.name for member in members]


@pytest.mark.parametrize(
    ("accounts", "expected"),
    [
        pytest.param(None, ["Ada Quill", "Ben Ink", "Cleo Reads"], id="no-users-file-policy-alone"),
        pytest.param(roster(), ["Cleo Reads"], id="empty-users-file-only-receive-only"),
        pytest.param(
            roster(("ada@example.org", ()), ("ben@example.org", ())),
            ["Ada Quill", "Ben Ink", "Cleo Reads"],
            id="everyone-holds-an-account",
        ),
        pytest.param(roster(("ben@example.org", ())), ["Ben Ink", "Cleo Reads"], id="ada-removed"),
        pytest.param(
            roster(("ADA.Q@mail.example.net", ()), ("ben@example.org", ())),
            ["Ada Quill", "Ben Ink", "Cleo Reads"],
            id="account-on-a-second-address-case-insensitive",
        ),
        pytest.param(
            roster(("someone@example.org", ("ada@example.org",))),
            ["Ada Quill", "Cleo Reads"],
            id="address-held-as-an-alias",
        ),
    ],
)
def test_members_in_force(accounts: Roster | None, expected: list[str]) -> None:
    assert names(members_in_force(MEMBERS, accounts)) == expected


@pytest.mark.parametrize(
    ("accounts", "expected"),
    [
        pytest.param(None, [], id="no-users-file-nothing-to-compare"),
        pytest.param(
            roster(("ada@example.org", ("ada.q@mail.example.net",)), ("ben@example.org", ())),
            [],
            id="in-step",
        ),
        pytest.param(
            roster(("ada@example.org", ("ada.q@mail.example.net",))),
            ["Ben Ink (ben@example.org) is in organisation.members but has no account"],
            id="member-without-account",
        ),
        pytest.param(
            roster(
                ("ada@example.org", ("ada.q@mail.example.net", "ada@home.example.net")),
                ("ben@example.org", ()),
            ),
            ["account ada@example.org sends as ada@home.example.net, which organisation.members"],
            id="alias-not-in-policy",
        ),
        pytest.param(
            roster(("ada@example.org", ()), ("ben@example.org", ())),
            ["Ada Quill: ada.q@mail.example.net is listed in organisation.members but is no address"],
            id="policy-address-not-on-the-account",
        ),
        pytest.param(
            roster(("ada@example.org", ()), ("ada.q@mail.example.net", ()), ("ben@example.org", ())),
            ["Ada Quill: the addresses organisation.members lists for them belong to 2 different accounts"],
            id="two-accounts-one-member",
        ),
        pytest.param(
            roster(
                ("ada@example.org", ("ada.q@mail.example.net",)),
                ("ben@example.org", ()),
                ("zed@example.org", ()),
            ),
            ["account zed@example.org is not in organisation.members"],
            id="account-not-in-policy",
        ),
    ],
)
def test_differences_are_named(accounts: Roster | None, expected: list[str]) -> None:
    notes = differences(MEMBERS, accounts)
    assert len(notes) == len(expected), notes
    for note, start in zip(notes, expected, strict=True):
        assert note.startswith(start), note


def test_a_password_change_is_not_a_new_committee() -> None:
    assert roster(("ben@example.org", ())).digest == roster(("BEN@example.org", ())).digest
    assert roster(("ben@example.org", ())).digest != roster(("ben@example.org", ("b@example.org",))).digest


def document() -> PolicyDocument:
    return parse_policy_text(POLICY, Path("policy.yaml"))


def test_the_compiled_policy_knows_only_the_members_in_force() -> None:
    source = POLICY.encode()
    removed = compile_policy(document(), source, accounts=roster(("ben@example.org", ())))
    assert "ada@example.org" not in removed.committee
    assert "ada.q@mail.example.net" not in removed.committee  # every address of the removed member
    assert {"ben@example.org", "cleo@example.org"} <= removed.committee
    assert [name for _address, name in removed.member_names] == ["Ben Ink", "Cleo Reads"]
    assert removed.committee_notes and "Ada Quill" in removed.committee_notes[0]
    # The committee is part of the policy version: workers that load it themselves must agree.
    everyone = compile_policy(
        document(), source, accounts=roster(("ada@example.org", ()), ("ben@example.org", ()))
    )
    assert everyone.version != removed.version
    assert compile_policy(document(), source).version not in (everyone.version, removed.version)


ADDRESSES = ("ada@example.org", "ada.q@mail.example.net", "ben@example.org", "cleo@example.org")


@settings(max_examples=200, deadline=None)
@given(
    holders=st.lists(
        st.tuples(st.sampled_from(ADDRESSES), st.lists(st.sampled_from(ADDRESSES), max_size=2)),
        max_size=4,
        unique_by=lambda pair: pair[0],
    ),
    users_file=st.booleans(),
)
def test_a_member_without_an_account_is_never_inside(
    holders: list[tuple[str, list[str]]], users_file: bool
) -> None:
    # Whatever the users file holds, every address of a member with no account (and not
    # receive_only) is outside, and every address of a member with one is inside.
    accounts = roster(*((address, tuple(aliases)) for address, aliases in holders)) if users_file else None
    policy = compile_policy(document(), POLICY.encode(), accounts=accounts)
    held = {address for address, aliases in holders for address in (address, *aliases)}
    for member in MEMBERS:
        inside = not users_file or member.receive_only or bool(held & set(member.addresses))
        for address in member.addresses:
            assert (address in policy.committee) is inside, (member.name, address)
    kept = committee_in_force(document(), accounts).organisation.members
    assert all(set(member.addresses) <= policy.committee for member in kept)
