"""A reply that adds or removes people must say so in its first lines: ``[+ Name]`` / ``[- Name]``.

The guidelines ask: *if adding or removing people from the recipients list of an email thread, note the
change at the top of the email*, so nobody shares protected information without noticing who reads it.

The gateway's thread ledger remembers who took part in every message it relayed (From, To, Cc). For a
reply to a known message, this rule compares the reply's participants with the parent's. Addresses are
compared case-insensitively; the addresses of one committee member count as one person; the conduct
address and the sender themself are never "added" or "removed".

For every person added there must be a line ``[+ Name]``, for every person removed a line ``[- Name]``,
at the top of every text body (the plain-text and the HTML version), before any other text; blank
lines between them are fine, the order is free. ``Name`` is the person's display name or email address,
matched case-insensitively; the first word of the display name is accepted when it names only one of
the people added (or removed). A committee member with a ``banner_name`` in the policy is named by it in
the lines the gateway asks for (or inserts); their display name, policy name and addresses are accepted
too. A banner that names the wrong people, or only some of them, counts as missing.

- ``BANNER_MISSING``: with ``action: rewrite`` the gateway inserts the exact lines at the top of every
  plain-text and HTML body when the message has no banner at all; when the sender wrote a wrong or
  incomplete banner, or with ``action: reject``, the message is refused with the exact lines to paste.
- ``BANNER_NAMES_PROTECTED_PERSON``: the required banner would name a reporter or witness of a case to a
  recipient outside the committee (e.g. a reply that drops the reporter and adds a moderator), or to a
  member with a conflict of interest on that case. Nothing can fix that automatically: start a new
  message instead of replying.
- ``BCC_ON_CASE_THREAD``: the thread belongs to a case and the message is also sent to people who are
  not in To or Cc (Bcc). A silent addition is exactly what the banner exists to prevent. Bcc to the
  sender's own address is allowed (clients use it to keep a copy).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from gateway.policy.model import Address, Envelope, Finding, ParsedMessage, Rewrite, RuleContext
from gateway.policy.normalize import normalize

NAME = "recipient-banner"

CODES = {
    "BANNER_MISSING": (
        "A reply adds or removes people without the matching [+ Name] / [- Name] lines "
        "(rewrite: the lines are inserted when the message has no banner at all)."
    ),
    "BANNER_NAMES_PROTECTED_PERSON": (
        "The required banner would name a case's reporter or witness to someone outside the committee."
    ),
    "BCC_ON_CASE_THREAD": "A message on a case's thread has Bcc recipients.",
}

_BANNER_LINE = re.compile(r"^\[\s*([+-])\s*(.+?)\s*\]$")
# Mail clients "smarten" a typed hyphen into a dash; the sender still meant "[- Name]".
_DASHES = str.maketrans({"‐": "-", "‑": "-", "‒": "-", "–": "-", "—": "-", "−": "-"})
_UNSAFE_NAME = re.compile(r"[\[\]\x00-\x1f\x7f]")
_MAX_NAME = 100


class Params(BaseModel):
    """Options of the recipient-banner rule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allow_bcc_to_committee: bool = Field(
        False,
        description="Allow Bcc to committee member addresses on a case's thread (Bcc to outsiders never is).",
    )


@dataclass
class _Person:
    """One participant, keyed by address (or by committee member), with every name they go by."""

    key: str
    addresses: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    banner: str = ""  # a committee member's configured banner name

    @property
    def label(self) -> str:
        """What the banner line says: the configured banner name, else the display name, else the address."""
        return self.banner or (self.names[0] if self.names else self.addresses[0])

    def forms(self) -> set[str]:
        return {_fold(value) for value in (self.banner, *self.names, *self.addresses) if value}


@dataclass(frozen=True)
class _Change:
    sign: str  # "+" or "-"
    person: _Person

    @property
    def line(self) -> str:
        return f"[{self.sign} {self.person.label}]"


def check(message: ParsedMessage, envelope: Envelope, context: RuleContext, params: Params) -> list[Finding]:
    """Report missing or wrong banners on a known thread, and Bcc on a case's thread."""
    findings: list[Finding] = []
    senders = _sender_addresses(message, envelope)
    if context.thread.parent_known:
        findings.extend(_check_banner(message, envelope, context, senders))
    if context.thread.case is not None:
        findings.extend(_check_bcc(message, envelope, context, params, senders))
    return findings


def _check_banner(
    message: ParsedMessage, envelope: Envelope, context: RuleContext, senders: set[str]
) -> list[Finding]:
    members = {address.lower(): name for address, name in context.member_names}
    banners = {address.lower(): name for address, name in context.banner_names}

    def key_of(address: str) -> str:
        member = members.get(address)
        return f"member:{member.casefold()}" if member else address

    ignored = {key_of(context.conduct_address)} | {key_of(address) for address in senders}
    before = _people(context.thread.parent_participants, key_of, members, banners)
    after = _people((*message.from_, *message.to, *message.cc), key_of, members, banners)
    changes = [_Change("+", after[key]) for key in sorted(after.keys() - before.keys() - ignored)]
    changes += [_Change("-", before[key]) for key in sorted(before.keys() - after.keys() - ignored)]
    changes.sort(key=lambda change: (change.sign != "+", _fold(change.person.label)))

    verdicts = [_judge(_leading_banners(text), changes) for text in message.leading_text]
    if all(verdict == "ok" for verdict in verdicts) and (verdicts or not changes):
        return []
    lines = tuple(change.line for change in changes)
    added = tuple(address for change in changes if change.sign == "+" for address in change.person.addresses)
    if _names_protected_person(changes, envelope, context):
        return [
            Finding(
                rule=NAME,
                code="BANNER_NAMES_PROTECTED_PERSON",
                where="body",
                kind="name",
                advice=(
                    "This reply changes who is on the thread, and the line it would need at the top, saying "
                    "who was added or removed, would name a person the committee protects to someone outside "
                    "the committee. Start a new message instead of replying, without quoting the thread."
                ),
                recipients=added,
                private_detail=" ".join(lines),
            )
        ]
    if not changes:
        advice = (
            "Nobody was added to or removed from this thread, but the message begins with lines saying "
            "that people were; remove them so recipients are not misled about who reads the thread."
        )
    else:
        advice = (
            "This reply changes who is on the thread. Begin the message (every version of it, plain "
            f"text and HTML) with exactly these lines, one per line: {' '.join(lines)}"
        )
    # Insert lines only where the sender wrote none: next to a wrong banner they would contradict it.
    can_rewrite = bool(changes) and bool(verdicts) and all(verdict == "absent" for verdict in verdicts)
    return [
        Finding(
            rule=NAME,
            code="BANNER_MISSING",
            where="body",
            kind="banner",
            advice=advice,
            recipients=added,
            rewrite=Rewrite(banner_lines=lines) if can_rewrite else None,
        )
    ]


def _check_bcc(
    message: ParsedMessage, envelope: Envelope, context: RuleContext, params: Params, senders: set[str]
) -> list[Finding]:
    visible = {mailbox.address.lower() for mailbox in (*message.to, *message.cc)}
    hidden = tuple(
        recipient
        for recipient in envelope.rcpt_tos
        if (lowered := recipient.lower()) not in visible
        and lowered != context.conduct_address
        and lowered not in senders
        and not (params.allow_bcc_to_committee and context.is_inside(lowered, context.thread.case))
    )
    if not hidden:
        return []
    return [
        Finding(
            rule=NAME,
            code="BCC_ON_CASE_THREAD",
            where="envelope",
            kind="address",
            advice=(
                "This thread belongs to a case, so nobody may receive it in Bcc. Put "
                f"{', '.join(hidden)} in To or Cc (with a [+ Name] line at the top), or remove them."
            ),
            recipients=hidden,
            case=context.thread.case,
        )
    ]


def _sender_addresses(message: ParsedMessage, envelope: Envelope) -> set[str]:
    senders = {mailbox.address.lower() for mailbox in message.from_ if mailbox.address}
    senders.add(envelope.mail_from.lower())
    senders.add(envelope.authenticated_as.lower())
    return {sender for sender in senders if "@" in sender}


def _people(
    mailboxes: Iterable[Address],
    key_of: Callable[[str], str],
    members: dict[str, str],
    banners: dict[str, str],
) -> dict[str, _Person]:
    people: dict[str, _Person] = {}
    for mailbox in mailboxes:
        address = mailbox.address.strip().lower()
        if "@" not in address:
            continue  # group syntax such as "undisclosed-recipients:;"
        key = key_of(address)
        person = people.setdefault(key, _Person(key=key))
        if address not in person.addresses:
            person.addresses.append(address)
        for name in (_clean_name(mailbox.name), _clean_name(members.get(address, ""))):
            if name and name not in person.names:
                person.names.append(name)
        if not person.banner:
            person.banner = _clean_name(banners.get(address, ""))
    return people


def _clean_name(name: str) -> str:
    cleaned = " ".join(name.split())
    if not cleaned or len(cleaned) > _MAX_NAME or _UNSAFE_NAME.search(cleaned):
        return ""
    return cleaned


def _fold(text: str) -> str:
    # Case first, then the matcher's normalisation: a label typed in capitals ("I" for "ı", "Ð" for
    # "ð"), with accents or with look-alike letters is the same label. (Look-alikes are mapped per
    # case, so folding case first keeps a label and its capitals together.)
    return normalize(unicodedata.normalize("NFKC", text).casefold()).strip("<>\"' ")


def _leading_banners(text: str) -> list[tuple[str, str]]:
    """The ``[+ Name]`` / ``[- Name]`` lines at the top of a body, before any other text."""
    banners = []
    for raw_line in text.splitlines():
        line = unicodedata.normalize("NFKC", raw_line).translate(_DASHES).strip()
        if not line:
            continue
        match = _BANNER_LINE.match(line)
        if match is None:
            break
        banners.append((match.group(1), _fold(match.group(2))))
    return banners


def _judge(banners: list[tuple[str, str]], changes: list[_Change]) -> str:
    """``ok``, ``absent`` (no banner lines at all) or ``wrong`` (an extra, missing or wrong line)."""
    covered: set[int] = set()
    for sign, text in banners:
        matches = [
            index
            for index, change in enumerate(changes)
            if change.sign == sign and text in change.person.forms()
        ]
        if not matches:
            matches = _first_name_matches(sign, text, changes)
        if len(matches) != 1:
            return "wrong"
        covered.add(matches[0])
    if len(covered) == len(changes):
        return "ok"
    return "absent" if not banners else "wrong"


def _first_name_matches(sign: str, text: str, changes: list[_Change]) -> list[int]:
    # "[+ Maya]" for "Maya Example", as the guidelines write it, when only one Maya was added.
    return [
        index
        for index, change in enumerate(changes)
        if change.sign == sign
        and any(_fold(name).split(" ", 1)[0] == text for name in change.person.names if " " in name.strip())
    ]


def _names_protected_person(changes: list[_Change], envelope: Envelope, context: RuleContext) -> bool:
    # Members conflicted on a case are outsiders for that case's people.
    candidates = {
        recipient.lower()
        for recipient in envelope.rcpt_tos
        if not context.is_committee(recipient) or context.conflicted_cases(recipient)
    }
    if not candidates:
        return False
    consented = {(consent.case, consent.person, consent.recipient) for consent in context.consents}
    for change in changes:
        for text in (change.person.label, *change.person.addresses):
            for identity in context.finder.find(text):
                if any(
                    (identity.case, identity.person, outsider) not in consented
                    and not context.is_inside(outsider, identity.case)
                    for outsider in candidates
                ):
                    return True
    return False
