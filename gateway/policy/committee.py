"""The committee in force: the policy's members who still hold an account, and where the two lists disagree.

The policy names the members (``organisation.members``: names and addresses); the users file says who
may log in (``conduct-gateway user add|remove``). Once the users file exists, a policy member counts as
inside the committee only while one of their addresses holds an account, or while they are marked
``receive_only`` (a member who never sends through the gateway). So ``user remove`` takes a person
out of the committee for the policy at once, with every address the policy lists for them: from the
next message on they are an outsider, and no second edit is needed. Without a users file (nobody can
log in) the policy's list is the committee as written.

Every difference between the two lists is named (``differences``): logged when the gateway starts or
reloads, and printed by ``conduct-gateway config validate``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gateway.policy.config import Member, PolicyDocument


@dataclass(frozen=True)
class Account:
    """One account of the users file: the login address and the other addresses it sends as."""

    address: str  # lower-cased
    aliases: tuple[str, ...] = ()  # lower-cased

    @property
    def addresses(self) -> tuple[str, ...]:
        return (self.address, *self.aliases)


@dataclass(frozen=True)
class Roster:
    """The accounts in the users file (never their password hashes), read before the policy compiles."""

    accounts: tuple[Account, ...]
    origin: str = "the users file"

    @classmethod
    def of(cls, accounts: Iterable[tuple[str, Sequence[str]]], origin: str = "the users file") -> Roster:
        """From (address, aliases) pairs, lower-cased and in a canonical order."""
        made = {
            address.lower(): Account(address.lower(), tuple(alias.lower() for alias in aliases))
            for address, aliases in accounts
        }
        return cls(tuple(made[key] for key in sorted(made)), origin)

    @property
    def digest(self) -> str:
        """Identifies who holds which address (a password change leaves it alone)."""
        lines = "".join(f"{a.address}:{','.join(sorted(a.aliases))}\n" for a in self.accounts)
        return hashlib.sha256(lines.encode("utf-8")).hexdigest()

    def owner_of(self, address: str) -> str | None:
        """The account (login address) that holds ``address``, if any."""
        lowered = address.lower()
        for account in self.accounts:
            if lowered in account.addresses:
                return account.address
        return None


def holds_account(member: Member, roster: Roster) -> bool:
    """Whether any address the policy lists for ``member`` belongs to an account."""
    return any(roster.owner_of(address) is not None for address in member.addresses)


def members_in_force(members: Sequence[Member], roster: Roster | None) -> tuple[Member, ...]:
    """The members who count as inside the committee (all of them when there is no users file)."""
    if roster is None:
        return tuple(members)
    return tuple(member for member in members if member.receive_only or holds_account(member, roster))


def committee_in_force(document: PolicyDocument, roster: Roster | None) -> PolicyDocument:
    """``document`` with ``organisation.members`` cut down to the members in force.

    Everything compiled from the document (the committee's addresses, banner names, audiences,
    conflicts, reviewers) then agrees on who is inside.
    """
    members = document.organisation.members
    kept = members_in_force(members, roster)
    if len(kept) == len(members):
        return document
    organisation = document.organisation.model_copy(update={"members": kept})
    return document.model_copy(update={"organisation": organisation})


def differences(members: Sequence[Member], roster: Roster | None) -> tuple[str, ...]:
    """Every way the policy's members and the accounts disagree, one plain sentence each.

    Names committee members and their addresses (never anyone a case protects).
    """
    if roster is None:
        return ()
    notes: list[str] = []
    claimed: set[str] = set()
    for member in members:
        owners = dict.fromkeys(
            owner for address in member.addresses if (owner := roster.owner_of(address)) is not None
        )
        claimed.update(owners)
        if not owners:
            if not member.receive_only:
                notes.append(
                    f"{member.name} ({member.addresses[0]}) is in organisation.members but has no account "
                    f"in {roster.origin}: they count as OUTSIDE the committee (add their account with "
                    "`conduct-gateway user add`, mark them `receive_only: true`, or remove them from "
                    "the policy)"
                )
            continue
        if len(owners) > 1:
            notes.append(
                f"{member.name}: the addresses organisation.members lists for them belong to "
                f"{len(owners)} different accounts ({', '.join(owners)})"
            )
        listed = {address.lower() for address in member.addresses}
        for owner in owners:
            account = next(a for a in roster.accounts if a.address == owner)
            for address in account.addresses:
                if address not in listed:
                    notes.append(
                        f"account {owner} sends as {address}, which organisation.members does not list "
                        f"for {member.name}: mail to {address} counts as outside the committee"
                    )
        for address in sorted(listed):
            if roster.owner_of(address) is None:
                notes.append(
                    f"{member.name}: {address} is listed in organisation.members but is no address of "
                    f"their account {next(iter(owners))} (it counts as inside while the account exists)"
                )
    for account in roster.accounts:
        if account.address not in claimed:
            notes.append(
                f"account {account.address} is not in organisation.members: they can send, but mail to "
                "them counts as outside the committee"
            )
    return tuple(notes)
