"""Who a recipient is to the committee: the audience roles, classified once per policy load.

Every envelope recipient gets one or more roles:

* ``conduct`` (the conduct address) or ``committee`` (a member's address). These are exclusive: mail
  inside the committee is never to an audience, whatever lists the address also appears on.
* ``reporter``, ``witness``, ``reported``: an address of a case's reporter, witness or reported party.
* ``admin``, ``moderator``, ``organiser``: an address or a domain listed in the policy's ``audiences``.
* ``other``: none of the above.

An outside address can hold several roles at once (a moderator who is also a case's reported party
is both), so a rule scoped to any of them applies. Addresses match case-insensitively, also with a
sub-address (``pat+forum@example.com`` is ``pat@example.com``: the same mailbox). A listed domain
matches addresses at that domain and at its subdomains (``forum.example.net`` covers
``mail.forum.example.net``), so a forgotten host name fails towards more review, not less.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType


class Role(StrEnum):
    """What a recipient is to the committee."""

    CONDUCT = "conduct"
    COMMITTEE = "committee"
    REPORTER = "reporter"
    WITNESS = "witness"
    REPORTED = "reported"
    ADMIN = "admin"
    MODERATOR = "moderator"
    ORGANISER = "organiser"
    OTHER = "other"


# Plain words for advice texts (sender-facing).
ROLE_NOUNS: Mapping[Role, str] = MappingProxyType(
    {
        Role.CONDUCT: "the conduct address",
        Role.COMMITTEE: "a committee member",
        Role.REPORTER: "a case's reporter",
        Role.WITNESS: "a case's witness",
        Role.REPORTED: "a case's reported party",
        Role.ADMIN: "an administrator",
        Role.MODERATOR: "a moderator",
        Role.ORGANISER: "an event organiser",
        Role.OTHER: "someone outside the committee",
    }
)

INSIDE_ROLES = frozenset({Role.CONDUCT, Role.COMMITTEE})


@dataclass(frozen=True, order=True)
class Membership:
    """One reason a recipient has a role: the role and, for case roles, the case's code name."""

    role: Role
    case: str | None = None


def mailbox_key(address: str) -> str:
    """The form addresses are compared in: trimmed, without angle brackets, lower-cased."""
    return address.strip().strip("<>").strip().lower().rstrip(".")


def _without_subaddress(key: str) -> str:
    local, at, domain = key.rpartition("@")
    if not at or "+" not in local:
        return key
    return f"{local.split('+', 1)[0]}@{domain}"


def _domain_of(key: str) -> str:
    return key.rpartition("@")[2]


_REMEMBERED_ANSWERS = 4096


@dataclass(frozen=True)
class Audiences:
    """The policy's audience lists, ready to classify any address in constant time per domain label."""

    conduct_address: str = ""
    committee: frozenset[str] = frozenset()
    by_address: Mapping[str, frozenset[Membership]] = field(default_factory=lambda: MappingProxyType({}))
    by_domain: Mapping[str, frozenset[Membership]] = field(default_factory=lambda: MappingProxyType({}))
    # Rules ask about the same few recipients several times per message, and about the same people
    # message after message: answers are remembered for this policy load (bounded).
    _answers: dict[str, frozenset[Membership]] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    @classmethod
    def build(
        cls,
        *,
        conduct_address: str,
        committee: Iterable[str],
        addresses: Iterable[tuple[str, Membership]] = (),
        domains: Iterable[tuple[str, Membership]] = (),
    ) -> Audiences:
        """Index the lists once (per policy load)."""
        by_address: dict[str, set[Membership]] = {}
        for address, membership in addresses:
            by_address.setdefault(mailbox_key(address), set()).add(membership)
        by_domain: dict[str, set[Membership]] = {}
        for domain, membership in domains:
            by_domain.setdefault(domain.strip().lower().strip("."), set()).add(membership)
        return cls(
            conduct_address=mailbox_key(conduct_address) if conduct_address else "",
            committee=frozenset(mailbox_key(address) for address in committee),
            by_address=MappingProxyType({key: frozenset(value) for key, value in by_address.items()}),
            by_domain=MappingProxyType({key: frozenset(value) for key, value in by_domain.items()}),
        )

    def memberships(self, address: str) -> frozenset[Membership]:
        """Every role ``address`` holds (with the case, for case roles); ``other`` when none."""
        answer = self._answers.get(address)
        if answer is None:
            if len(self._answers) >= _REMEMBERED_ANSWERS:
                self._answers.clear()
            answer = self._answers[address] = self._memberships(address)
        return answer

    def _memberships(self, address: str) -> frozenset[Membership]:
        key = mailbox_key(address)
        if key and key == self.conduct_address:
            return frozenset({Membership(Role.CONDUCT)})
        if key in self.committee:
            return frozenset({Membership(Role.COMMITTEE)})
        found: set[Membership] = set()
        for candidate in {key, _without_subaddress(key)}:
            found.update(self.by_address.get(candidate, ()))
        labels = _domain_of(key).split(".")
        for start in range(len(labels)):
            found.update(self.by_domain.get(".".join(labels[start:]), ()))
        return frozenset(found) if found else frozenset({Membership(Role.OTHER)})

    def roles(self, address: str) -> frozenset[Role]:
        """The roles ``address`` holds (``other`` when none)."""
        return frozenset(membership.role for membership in self.memberships(address))


NO_AUDIENCES = Audiences()
