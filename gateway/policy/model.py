"""Frozen data the policy core passes around: envelope, parsed message, facts, findings, verdict."""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Protocol

from gateway.policy.audiences import NO_AUDIENCES, Audiences, Membership, Role


@dataclass(frozen=True)
class Envelope:
    """SMTP envelope as the gateway received it. Addresses are as given (case kept)."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    authenticated_as: str


class SegmentKind(StrEnum):
    """What kind of text a segment is, so findings can say where without quoting it."""

    HEADER = "header"  # a decoded header value (display names and addresses included)
    TEXT = "text"  # a text/* body part (decoded, charset applied)
    HTML_TEXT = "html-text"  # the rendered text of an HTML part
    HTML_ATTRIBUTE = "html-attribute"  # href/alt/title/... values in an HTML part
    FILENAME = "filename"  # an attachment or part name (RFC 2231 / 2047 decoded)
    ATTACHMENT_TEXT = "attachment-text"  # text-like attachments (csv, json, ics, vcard, ...)


@dataclass(frozen=True)
class TextSegment:
    """A piece of decoded text somewhere in the message.

    ``where`` is a sender-safe location such as ``header Subject``, ``part 1.2 (text/html)`` or
    ``attachment "notes.txt" in part 2/message 1``; it never contains the text itself.
    ``reading`` is the text as a person reads it (quote markers gone, quoted lines joined,
    encoded-words apart: see ``gateway.policy.reading``) when that differs from ``text``, else "".
    """

    where: str
    kind: SegmentKind
    text: str
    reading: str = ""


@dataclass(frozen=True)
class Uninspectable:
    """A part whose content cannot be read (encrypted, password-protected, unknown binary)."""

    where: str
    reason: str
    # encrypted | archive | binary | media (images, audio, video: listed in ParsedMessage.media)
    kind: str = "binary"


@dataclass(frozen=True)
class Address:
    """A mailbox from a header: display name (decoded, may be empty) and addr-spec."""

    name: str
    address: str


@dataclass(frozen=True)
class ParsedMessage:
    """Everything the rules need from a message, decoded once, before any rule runs.

    ``ambiguities`` lists reasons the message can be read two ways (duplicate singleton headers,
    conflicting MIME parameters, broken boundaries, invalid base64, undecodable 8-bit headers):
    the engine refuses such a message before rules run (550 5.6.0).
    """

    raw: bytes
    message_id: str | None
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    from_: tuple[Address, ...]
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    bcc: tuple[Address, ...]
    subject: str
    segments: tuple[TextSegment, ...]
    uninspectable: tuple[Uninspectable, ...]
    ambiguities: tuple[str, ...]
    signed: bool
    # Leading text of each top-level text body (text/plain and rendered text/html), for banners.
    leading_text: tuple[str, ...] = ()
    # Images, audio and video (by their bytes): not read (no text to match); reporter-protection
    # counts them as uninspectable unless its media_uninspectable option is off.
    media: tuple[Uninspectable, ...] = ()


class Action(StrEnum):
    """What a rule's finding leads to; chosen in the policy, never by the rule."""

    AUDIT = "audit"  # record only
    WARN = "warn"  # deliver, tell the sender
    REWRITE = "rewrite"  # deliver a changed message
    HOLD = "hold"  # keep until a second member approves
    REJECT = "reject"  # refuse now
    TEMPFAIL = "tempfail"  # the check could not run (policy ``on_error``): 451, never a pass


class Outcome(StrEnum):
    """The engine's verdict. Severity grows down the list; the most severe finding wins."""

    DELIVER = "deliver"
    REWRITE = "rewrite"
    HOLD = "hold"
    REJECT = "reject"
    TEMPFAIL = "tempfail"  # a rule failed internally: 451, never a pass


@dataclass(frozen=True)
class Rewrite:
    """Changes a finding asks for, as data; applied in one place (policy.rewrite)."""

    add_cc: tuple[Address, ...] = ()
    add_envelope_recipients: tuple[str, ...] = ()
    banner_lines: tuple[str, ...] = ()


@dataclass(frozen=True)
class Finding:
    """One thing a rule noticed.

    ``code`` is UPPER_SNAKE (e.g. ``PROTECTED_NAME``); ``kind`` says what sort of thing matched
    (name, alias, address, username) without the matched text; ``recipients`` are the envelope
    recipients it concerns; ``advice`` is a plain sentence telling the sender what to do.
    ``private_detail`` may quote the matched text and is shown only by ``check`` to the sender
    of their own message: never logged, audited or put in an SMTP reply.
    """

    rule: str
    code: str
    where: str
    kind: str
    advice: str
    recipients: tuple[str, ...] = ()
    case: str | None = None
    rewrite: Rewrite | None = None
    private_detail: str = ""
    # The consent this finding records (the engine's CONSENT_* audit findings): its key and date
    # are audited, never its reference.
    consent: Consent | None = None


@dataclass(frozen=True)
class Decision:
    """A finding with the action the policy attached to it."""

    finding: Finding
    action: Action


@dataclass(frozen=True)
class Verdict:
    """The engine's answer for one message."""

    outcome: Outcome
    decisions: tuple[Decision, ...]
    policy_version: str
    rewrite: Rewrite = field(default_factory=Rewrite)


class IdentityKind(StrEnum):
    """What a protected identity string is."""

    NAME = "name"
    ALIAS = "alias"
    ADDRESS = "address"
    USERNAME = "username"


# How findings and advice name each kind of identity to the sender.
IDENTITY_NOUNS: dict[IdentityKind, str] = {
    IdentityKind.NAME: "name",
    IdentityKind.ALIAS: "alias or nickname",
    IdentityKind.ADDRESS: "email address",
    IdentityKind.USERNAME: "username",
}


@dataclass(frozen=True)
class ProtectedIdentity:
    """One string that identifies a protected person (a case's reporter or witness).

    The matcher derives the forms people write from it (see ``gateway.policy.variants``).
    ``weak_forms`` False stops a lone given name or surname of this person being reported (the
    person's name parts are everyday words); ``everyday_words`` lists single name parts that are
    not reported alone for the same reason. Both only ever silence weak forms, never strong ones.
    """

    case: str  # the case's code name
    person: str  # a stable key for the person within the case (never shown to outsiders)
    kind: IdentityKind
    value: str  # as the admin wrote it; matchers normalise it
    weak_forms: bool = True
    everyday_words: tuple[str, ...] = ()


class Strength(StrEnum):
    """How surely a form that matched names the protected person."""

    STRONG = "strong"  # full name in any order, title or initial + surname, alias, address, username
    WEAK = "weak"  # a part that is a common word on its own: a lone given name or surname


@dataclass(frozen=True)
class IdentityHit:
    """One protected identity found in a text, with the form it was written in.

    ``form`` says which generated form matched (e.g. "title + surname"), never the text itself;
    ``variant`` is the normalised form that matched, for ``conduct-gateway check`` only.
    """

    identity: ProtectedIdentity
    strength: Strength
    form: str
    variant: str


@dataclass(frozen=True)
class Mention:
    """A protected person a learnt message names: ids and the kind of identity, never the identity."""

    case: str
    person: str
    kind: IdentityKind


@dataclass(frozen=True)
class Consent:
    """Recorded written permission: ``person`` of ``case`` may be named to ``recipient``.

    ``expires`` (ISO date): from that day on it lifts nothing; ``withdrawn`` (ISO date): the person
    took it back, and it lifts nothing whatever the date.
    """

    case: str
    person: str
    recipient: str  # lower-cased address
    reference: str  # where the written permission is kept
    date: str  # ISO date
    expires: str | None = None
    withdrawn: str | None = None

    @property
    def key(self) -> str:
        """A short stable id for audit entries and the CLI.

        The reference is written by admins and often names the person ("Sam's email of ..."), so
        audit entries carry this digest and the date, never the reference itself.
        """
        fields = (self.case, self.person, self.recipient, self.date, self.reference)
        return hashlib.sha256("\0".join(fields).encode("utf-8")).hexdigest()[:12]

    def status(self, today: datetime.date | None) -> str:
        """``in-force``, ``withdrawn`` or ``expired`` on ``today``.

        Without a date (None) a consent that can expire counts as expired: never lift on a guess.
        """
        if self.withdrawn is not None:
            return "withdrawn"
        if self.expires is not None and (today is None or today.isoformat() >= self.expires):
            return "expired"
        return "in-force"


@dataclass(frozen=True)
class ThreadFacts:
    """What the thread ledger knows about the message's parent, looked up before evaluation."""

    parent_known: bool = False
    parent_participants: tuple[Address, ...] = ()
    case: str | None = None  # the case the thread is known to belong to, if any
    # The message's recipients the journal has seen acting as mailing lists (lower-cased); looked
    # up with the parent so that the core never reads the ledger itself.
    list_recipients: frozenset[str] = frozenset()


class IdentityFinder(Protocol):
    """A multi-pattern matcher over normalised text, built once per policy load."""

    def find(self, text: str) -> list[ProtectedIdentity]:
        """Every protected identity written in a strong form in ``text`` (deduplicated)."""
        ...

    def find_hits(self, text: str) -> list[IdentityHit]:
        """Every strong and weak form in ``text``, one hit per identity, strength and form."""
        ...


@dataclass(frozen=True)
class ContentOverlap:
    """How much of one protected document (a reporter's own message) a text repeats.

    ``document`` is an opaque id (never the text); ``matched`` counts the document's shingles
    the text repeats in verbatim pieces of 8 words or more, and ``fraction`` is matched / the
    document's shingle count; ``longest_run`` is the longest run of consecutive words repeated
    verbatim (after normalisation). ``spans`` are the [start, end) word positions of the text
    (out of ``words``) that lie in a verbatim run of the document, so a passage with a few words
    changed is still seen (``passages.best_passage``). ``person`` is the protected person
    (their id in the case) who wrote the document, when known. A document the text shares only
    lone 4-word sequences with (common phrases) is not reported.
    """

    case: str
    document: str
    matched: int
    fraction: float
    longest_run: int
    person: str | None = None
    spans: tuple[tuple[int, int], ...] = ()
    words: int = 0


class ContentFingerprints(Protocol):
    """Fingerprints of protected content (hashed shingles, never the text), looked up before evaluation."""

    def overlaps(self, text: str) -> list[ContentOverlap]:
        """Every protected document that ``text`` repeats part of (strongest first)."""
        ...

    def named_by(self, case: str, person: str) -> frozenset[Mention]:
        """The protected people named in the learnt messages that ``person`` of ``case`` wrote."""
        ...


class NoFingerprints:
    """No protected content known (the default until fingerprints are learnt)."""

    def overlaps(self, text: str) -> list[ContentOverlap]:
        return []

    def named_by(self, case: str, person: str) -> frozenset[Mention]:
        return frozenset()


NO_FINGERPRINTS: ContentFingerprints = NoFingerprints()


@dataclass(frozen=True)
class RuleContext:
    """Facts every rule may read: the organisation, the compiled matcher, consent, thread history."""

    conduct_address: str  # lower-cased
    committee: frozenset[str]  # lower-cased member addresses
    member_names: tuple[tuple[str, str], ...]  # (address, display name) for banner naming
    internal_domains: frozenset[str]
    finder: IdentityFinder
    consents: frozenset[Consent]
    thread: ThreadFacts = field(default_factory=ThreadFacts)
    protected_content: ContentFingerprints = NO_FINGERPRINTS
    # Who each recipient is (audiences.py); the default knows no admins, moderators or case parties.
    audiences: Audiences = NO_AUDIENCES
    # Case code name -> lower-cased addresses of members with a conflict of interest on that case
    # (every address of such a member): for that case they count as outside the committee.
    conflicts: Mapping[str, frozenset[str]] = field(default_factory=lambda: MappingProxyType({}))
    # (address, banner name) of committee members with a configured ``banner_name``.
    banner_names: tuple[tuple[str, str], ...] = ()
    # The day the message is judged (UTC), handed in by the caller: the core never reads a clock.
    # ``consents`` holds only the consents in force on it.
    today: datetime.date | None = None

    def is_committee(self, address: str) -> bool:
        lowered = address.lower()
        return lowered == self.conduct_address or lowered in self.committee

    def is_inside(self, address: str, case: str | None) -> bool:
        """Inside the committee *for this case*: a member conflicted on ``case`` is outside it.

        ``case`` None asks about the committee as such (no case in question).
        """
        if not self.is_committee(address):
            return False
        return case is None or address.lower() not in self.conflicts.get(case, frozenset())

    def conflicted_cases(self, address: str) -> frozenset[str]:
        """The cases on which ``address`` (a member's) has a declared conflict of interest."""
        lowered = address.lower()
        return frozenset(case for case, members in self.conflicts.items() if lowered in members)

    def memberships_of(self, address: str) -> frozenset[Membership]:
        """The roles of ``address`` (with cases); the committee as this context knows it comes first."""
        lowered = address.lower()
        if lowered == self.conduct_address:
            return frozenset({Membership(Role.CONDUCT)})
        if lowered in self.committee:
            return frozenset({Membership(Role.COMMITTEE)})
        return self.audiences.memberships(address)

    def roles_of(self, address: str) -> frozenset[Role]:
        """The roles of ``address``: conduct, committee, reporter, ..., or other."""
        return frozenset(membership.role for membership in self.memberships_of(address))
