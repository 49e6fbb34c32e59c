"""No reporter's or witness's identity reaches anyone outside the committee without their consent.

The guidelines say: *never forward communication or disclose identities of reporters outside of
the code of conduct committee, without the express written permission of the person concerned.*

The rule applies when at least one **envelope** recipient is outside the committee (not a member
address and not the conduct address) — Bcc and envelope-only recipients count, whatever the
headers say. A committee member declared conflicted on a case (the case's ``conflicts``) is outside
the committee *for that case*: its people's identities sent to them are findings like an outsider's.
It then looks for every protected identity of every case (each reporter's and
witness's names, aliases, addresses and usernames) **everywhere in the message**: every header
(Subject, display names and addresses, Reply-To, any other header), every text part, HTML (the
rendered text and attribute values such as ``href``, ``alt`` and ``title``, comments, CSS text),
text-like attachments (CSV, JSON, XML, calendars, vCards...), office documents and ZIP archives,
attached and forwarded messages (their headers and parts, recursively), file names, and multipart
preambles and epilogues. Everything is decoded first (base64, quoted-printable, uuencode,
RFC 2047 encoded-words, RFC 2231 parameters, declared charsets) and normalised (compatibility
forms, case, accents, invisible characters, look-alike letters, line breaks), so a name split by
a soft line break, folded in a header, written in fullwidth or Cyrillic look-alike letters, or
with zero-width characters inside, is still found. Matches are on word boundaries: "Jin" is not
found in "Jingle" or "Beijing"; a person protected as "Jin Park" is not found by "Park" alone.

Text is also read as a person reads it, and both readings are searched. Quote prefixes at any depth
and in any style (``>``, ``> >``, ``>>``, ``|``, fullwidth ``＞``, Supercite tags such as ``JP>``,
with or without spaces, also in quoted-printable, format=flowed and HTML-escaped text) are removed
and the lines of a paragraph joined, whatever their quote depths, so ``Jin`` at the end of one
quoted line and ``> > Park`` at the start of the next is the name "Jin Park" (so is ``Jin > Park``
in quoted text a client re-wrapped); a word hyphenated across a line break (``Pa-`` / ``rk``) is
one word. A blank line (empty or only quote markers) ends a paragraph, and the words of two quoted
paragraphs are not joined. HTML is read as rendered: ``<br>``, paragraphs, ``<div>`` s, list items,
table cells and ``<blockquote>`` separate words as spaces do, so a name split across them is found.
Plain-text table bars (``| Jin | Park |``) read as spaces. Forwarded header blocks
(``-----Original Message-----``, ``From: Park, Jin``, Gmail's and Apple Mail's forwards) are read
like the rest of the text, their encoded-words decoded. In a header or a file name, the edge of an
RFC 2047 encoded-word counts as a word boundary: adjacent encoded-words decode with no space
between them, so ``w1`` and ``Jin Park`` in two encoded-words display as ``w1Jin Park``, yet the
name is found (also when the name itself is split across several encoded-words). A finding still
says which header or part holds the name.

- ``PROTECTED_IDENTITY``: a protected identity appears in the message. The finding says where
  (e.g. ``header Subject``, ``part 1.2 (text/html)``), what kind of identity (name, alias,
  address, username), which case, and which outside recipients it concerns — never the identity
  itself (only ``conduct-gateway check`` shows the sender what matched in their own message).
  A consent record for that person and that recipient lifts it for that recipient only. A
  person's identities may always be sent to that person's own recorded address
  (``self_disclosure``), so the committee can write to a reporter by name.
- ``UNINSPECTABLE_CONTENT``: a part the gateway cannot read (encrypted mail, an inline PGP
  message, opaque S/MIME, a password-protected or unreadable archive, unknown binary such as PDF
  or ``application/octet-stream`` that is not text) is going outside the committee. Consent does
  not lift it: nobody can know whose identity it holds. Images, audio and video are not counted
  unless ``media_uninspectable`` is on.

What the sender is told: which part to fix and for whom, e.g. *Remove the name of a person
protected in case home-shelf (found in header Subject), or record their written consent to be
named to editor@example.net.*
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from gateway.policy.model import (
    IDENTITY_NOUNS,
    Envelope,
    Finding,
    IdentityKind,
    ParsedMessage,
    ProtectedIdentity,
    RuleContext,
    Uninspectable,
)
from gateway.policy.normalize import normalize
from gateway.policy.reading import found_in

NAME = "reporter-protection"

CODES = {
    "PROTECTED_IDENTITY": (
        "A reporter's or witness's name, alias, address or username would reach a recipient outside "
        "the committee without recorded consent."
    ),
    "UNINSPECTABLE_CONTENT": (
        "A part the gateway cannot read (encrypted, password-protected, unknown binary) would reach a "
        "recipient outside the committee."
    ),
}


class Params(BaseModel):
    """Options of the reporter-protection rule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    self_disclosure: bool = Field(
        True,
        description=(
            "Allow a protected person's own identities in mail sent to one of that person's recorded "
            "addresses (so the committee can write to a reporter by name)."
        ),
    )
    media_uninspectable: bool = Field(
        False,
        description=(
            "Also report images, audio and video sent outside the committee as UNINSPECTABLE_CONTENT "
            "(a screenshot can show a name the gateway cannot read)."
        ),
    )


def check(message: ParsedMessage, envelope: Envelope, context: RuleContext, params: Params) -> list[Finding]:
    """Report protected identities and unreadable parts in a message going outside the committee."""
    outsiders = _outsiders(envelope, context)
    # A member with a conflict of interest on a case is outside the committee for that case only.
    conflicted = _conflicted(envelope, context)
    candidates = (*outsiders, *conflicted)
    if not candidates:
        return []
    consented = {(c.case, c.person, c.recipient.lower()) for c in context.consents}
    own_people = (
        {recipient: _own_people(recipient, context) for recipient in candidates}
        if params.self_disclosure
        else {}
    )
    findings: dict[tuple[str, str, str, str], Finding] = {}
    for segment in message.segments:
        for identity in found_in(context.finder, segment):
            key = (identity.case, identity.person, identity.kind.value, segment.where)
            if key in findings:
                continue
            concerned = tuple(
                recipient
                for recipient in candidates
                if not context.is_inside(recipient, identity.case)
                and (identity.case, identity.person, recipient.lower()) not in consented
                and (identity.case, identity.person) not in own_people.get(recipient, set())
            )
            if concerned:
                findings[key] = _identity_finding(identity, segment.where, concerned)
    unreadable = list(message.uninspectable)
    if params.media_uninspectable:
        unreadable.extend(message.media)
    # Unreadable content on a case's thread may hold that case's identities: a member conflicted on
    # it cannot be sent it unreviewed either. (Elsewhere nobody can tell which case it concerns.)
    thread_case = context.thread.case
    blind = (
        *outsiders,
        *(r for r in conflicted if thread_case is not None and not context.is_inside(r, thread_case)),
    )
    if not blind:
        return list(findings.values())
    return [*findings.values(), *(_uninspectable_finding(part, blind) for part in unreadable)]


def _outsiders(envelope: Envelope, context: RuleContext) -> tuple[str, ...]:
    """Envelope recipients outside the committee, each once (first spelling kept)."""
    seen: dict[str, str] = {}
    for recipient in envelope.rcpt_tos:
        if not context.is_committee(recipient):
            seen.setdefault(recipient.lower(), recipient)
    return tuple(seen.values())


def _conflicted(envelope: Envelope, context: RuleContext) -> tuple[str, ...]:
    """Envelope recipients inside the committee with a conflict of interest on some case."""
    seen: dict[str, str] = {}
    for recipient in envelope.rcpt_tos:
        if context.is_committee(recipient) and context.conflicted_cases(recipient):
            seen.setdefault(recipient.lower(), recipient)
    return tuple(seen.values())


def _own_people(recipient: str, context: RuleContext) -> set[tuple[str, str]]:
    """The protected people (case, person) whose recorded address ``recipient`` is."""
    wanted = normalize(recipient.strip("<>"))
    return {
        (identity.case, identity.person)
        for identity in context.finder.find(recipient)
        if identity.kind is IdentityKind.ADDRESS and normalize(identity.value.strip().strip("<>")) == wanted
    }


def _identity_finding(identity: ProtectedIdentity, where: str, recipients: tuple[str, ...]) -> Finding:
    noun = IDENTITY_NOUNS.get(identity.kind, "identity")
    return Finding(
        rule=NAME,
        code="PROTECTED_IDENTITY",
        where=where,
        kind=identity.kind.value,
        advice=(
            f"Remove the {noun} of a person protected in case {identity.case} (found in {where}), or "
            f"record their written consent to be named to {_listing(recipients)}."
        ),
        recipients=recipients,
        case=identity.case,
        private_detail=f'{noun} "{identity.value}"',
    )


def _uninspectable_finding(part: Uninspectable, recipients: tuple[str, ...]) -> Finding:
    return Finding(
        rule=NAME,
        code="UNINSPECTABLE_CONTENT",
        where=part.where,
        kind=part.kind,
        advice=(
            f"The gateway cannot read {part.where} ({part.reason}), so it cannot check that it names no "
            f"protected person, and it may not go to {_listing(recipients)} unreviewed. Send its content "
            "as plain text or an ordinary document, or send it to committee members only."
        ),
        recipients=recipients,
    )


def _listing(recipients: tuple[str, ...]) -> str:
    if len(recipients) == 1:
        return recipients[0]
    return ", ".join(recipients[:-1]) + " and " + recipients[-1]
