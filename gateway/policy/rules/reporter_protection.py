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
with zero-width characters inside, with look-alike letters of any script (the Unicode
confusables data, UTS #39: Cyrillic, Greek, Coptic, Cherokee...), or letter-spaced
(``N o o r  H a d d a d``, ``N.o.o.r``), is still found. Matches are on word boundaries: "Jin"
is not found in "Jingle" or "Beijing".

Admins never type variants: from each registered name the gateway derives the forms people write
(full list in the README, "Name forms"; ``conduct-gateway case show --reveal`` lists them per
person). **Strong** forms identify the person on their own: the full name in any order, with or
without a comma (``Haddad, Noor``), a title and the surname (``Mx Haddad``, ``Dr. Okonkwo-Reyes``),
the initial(s) and the surname (``N. Haddad``, ``Haddad, N.``, ``nhaddad``), aliases, addresses,
the distinctive local part of an address on its own (``noor.h``, ``noor_h``), usernames with or
without ``@``. **Weak** forms are a given name or a surname on its own (``Noor``, ``Haddad's``):
common words that often mean someone else, so they are held for a second member's review rather
than refused. A person whose name parts are everyday words can be switched off for them
(``weak_forms: false``, or the words in ``everyday_words``), and the policy's
``weak_forms: false`` switches weak forms off altogether.

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
RFC 2047 encoded-word between two letters or digits counts as a word boundary: adjacent
encoded-words decode with no space between them, so ``w1`` and ``Jin Park`` in two encoded-words
display as ``w1Jin Park``, yet the name is found (also when the name itself is split across
several encoded-words). A finding still says which header or part holds the name.

- ``PROTECTED_IDENTITY``: a protected identity appears in the message. The finding says where
  (e.g. ``header Subject``, ``part 1.2 (text/html)``), what kind of identity (name, alias,
  address, username), which case, and which outside recipients it concerns — never the identity
  itself (only ``conduct-gateway check`` shows the sender what matched in their own message).
  A consent record for that person and that recipient lifts it for that recipient only. A
  person's identities may always be sent to that person's own recorded address
  (``self_disclosure``), so the committee can write to a reporter by name. A reporter's or
  witness's own words may be quoted back to them, names included (``reporter_own_words``): an
  identity sent to the recorded address of the author of a learnt message (see
  protected-content) is not a finding when that message names the person with that kind of
  identity (the name, an alias, the address...) and, in that part, the identity occurs only
  inside passages repeating the author's message word for word (5 words or more). The same
  identity in the committee's own words, an identity the author did not write (another witness,
  or the witness's address when the author wrote only the name), or the same quote to anyone
  else is still a finding.
- ``PROTECTED_NAME_PART``: a protected person's given name or surname appears on its own (a weak
  form, never together with a strong form of the same person in that part). The shipped policy
  holds the message for a second member's review; the reviewer is told which part and which
  case, and that a lone name part may well mean someone else. Consent and ``self_disclosure``
  lift it as they lift ``PROTECTED_IDENTITY``.
- ``UNINSPECTABLE_CONTENT``: a part the gateway cannot read is going outside the committee:
  encrypted mail, an inline PGP message, opaque S/MIME, an image (a screenshot can show a name),
  a scanned or password-protected PDF, a password-protected archive, an archive format it does
  not open (7-Zip, RAR), an Office 97-2003 file, unknown binary, a file damaged or too large or
  too deeply nested to unpack. Consent does not lift it: nobody can know whose identity it holds.
  The finding says which part and why (*it is an image*). Images, audio and video count unless
  ``media_uninspectable`` is off.

Attachments are read by what their bytes are, never by their declared type or name: PDF (page
text, properties, comments, form fields, attached files), Word, Excel and PowerPoint (OOXML) and
OpenDocument files (body, tables, headers, comments, document properties such as the author),
RTF (decoded), Outlook ``winmail.dat`` (TNEF) and ``.msg`` files, calendar invitations and contact
cards (folded lines joined, ``N:Surname;Given`` and ``CN="Surname, Given"`` read as names), and
ZIP, tar, gzip, bzip2 and xz archives, recursively.

What the sender is told: which part to fix and for whom, e.g. *Remove the name of a person
protected in case home-shelf (found in header Subject), or record their written consent to be
named to editor@example.net.*
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from gateway.policy.fingerprint import SPAN_WORDS, split_at_spans
from gateway.policy.model import (
    IDENTITY_NOUNS,
    Envelope,
    Finding,
    IdentityHit,
    IdentityKind,
    Mention,
    ParsedMessage,
    RuleContext,
    Strength,
    TextSegment,
    Uninspectable,
)
from gateway.policy.normalize import normalize
from gateway.policy.reading import hits_in

NAME = "reporter-protection"

CODES = {
    "PROTECTED_IDENTITY": (
        "A reporter's or witness's name, alias, address or username would reach a recipient outside "
        "the committee without recorded consent."
    ),
    "PROTECTED_NAME_PART": (
        "A reporter's or witness's given name or surname, on its own, would reach a recipient outside "
        "the committee without recorded consent (a weak form: it may mean someone else)."
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
    weak_forms: bool = Field(
        True,
        description=(
            "Report a protected person's lone given name or surname (PROTECTED_NAME_PART); false "
            "looks only for strong forms (full names, titles or initials with the surname, aliases, "
            "addresses, usernames)."
        ),
    )
    reporter_own_words: bool = Field(
        True,
        description=(
            "Allow the identities a reporter or witness wrote in a learnt message of theirs when that "
            "message is quoted back to them (only inside the quoted passage, only the kinds of identity "
            "they wrote, only to their recorded addresses)."
        ),
    )
    media_uninspectable: bool = Field(
        True,
        description=(
            "Report images, audio and video sent outside the committee as UNINSPECTABLE_CONTENT "
            "(a screenshot can show a name the gateway cannot read). Turn off to let them through unread."
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
    quoted_back = _QuotedBack(context) if params.reporter_own_words else None
    strong: dict[tuple[str, str, str, str], Finding] = {}
    weak: dict[tuple[str, str, str], Finding] = {}
    named: set[tuple[str, str]] = set()
    for segment in message.segments:
        for hit in hits_in(context.finder, segment):
            identity = hit.identity
            person = (identity.case, identity.person)
            if hit.strength is Strength.STRONG:
                key = (*person, identity.kind.value, segment.where)
                if key in strong:
                    continue
            elif not params.weak_forms or (*person, segment.where) in weak:
                continue
            concerned = tuple(
                recipient
                for recipient in candidates
                if not context.is_inside(recipient, identity.case)
                and (*person, recipient.lower()) not in consented
                and person not in own_people.get(recipient, set())
                and not (quoted_back is not None and quoted_back.allows(hit, segment, recipient))
            )
            if not concerned:
                continue
            if hit.strength is Strength.STRONG:
                strong[key] = _identity_finding(hit, segment.where, concerned)
                named.add(person)
            else:
                weak[(*person, segment.where)] = _name_part_finding(hit, segment.where, concerned)
    # A lone name part adds nothing where the same person is named in a strong form anyway.
    findings = [
        *strong.values(),
        *(finding for (case, person, _where), finding in weak.items() if (case, person) not in named),
    ]
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
        return findings
    return [*findings, *(_uninspectable_finding(part, blind) for part in unreadable)]


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


_Mentions = frozenset[tuple[Mention, Strength]]


class _QuotedBack:
    """Whether an identity in a part is only its author's own words quoted back to the author.

    Looked up lazily: most messages go to no author, and most parts name nobody.
    """

    def __init__(self, context: RuleContext) -> None:
        self._context = context
        self._named: dict[str, frozenset[Mention]] = {}
        self._split: dict[tuple[str, str], tuple[_Mentions, _Mentions]] = {}

    def allows(self, hit: IdentityHit, segment: TextSegment, recipient: str) -> bool:
        identity = hit.identity
        mention = Mention(identity.case, identity.person, identity.kind)
        if mention not in self._named_to(recipient):
            return False
        inside, outside = self._found(segment, recipient)
        # A full name must be inside one quoted passage as a full name: a given name at the end of one
        # passage and a surname at the start of the next are two weak hits, not the name.
        found_inside = (mention, Strength.STRONG) in inside or (
            hit.strength is Strength.WEAK and (mention, Strength.WEAK) in inside
        )
        return found_inside and mention not in {found for found, _strength in outside}

    def _named_to(self, recipient: str) -> frozenset[Mention]:
        """What the learnt messages of the people ``recipient`` is an address of name."""
        lowered = recipient.lower()
        if lowered not in self._named:
            fingerprints = self._context.protected_content
            self._named[lowered] = frozenset(
                mention
                for case, person in _own_people(recipient, self._context)
                for mention in fingerprints.named_by(case, person)
            )
        return self._named[lowered]

    def _found(self, segment: TextSegment, recipient: str) -> tuple[_Mentions, _Mentions]:
        """Identities inside the passages of ``segment`` that repeat the recipient's own messages,
        and identities anywhere else in it."""
        key = (segment.where, recipient.lower())
        if key not in self._split:
            authors = _own_people(recipient, self._context)
            spans = sorted(
                span
                for overlap in self._context.protected_content.overlaps(segment.text)
                if (overlap.case, overlap.person) in authors
                for span in overlap.spans
                if span[1] - span[0] >= SPAN_WORDS
            )
            inside, outside = split_at_spans(segment.text, spans)
            self._split[key] = (self._mentions(*inside), self._mentions(outside))
        return self._split[key]

    def _mentions(self, *texts: str) -> frozenset[tuple[Mention, Strength]]:
        # Each passage on its own: a name must not be put together from the ends of two quotes.
        finder = self._context.finder
        return frozenset(
            (Mention(hit.identity.case, hit.identity.person, hit.identity.kind), hit.strength)
            for text in texts
            for hit in finder.find_hits(text)
        )


def _identity_finding(hit: IdentityHit, where: str, recipients: tuple[str, ...]) -> Finding:
    identity = hit.identity
    noun = IDENTITY_NOUNS.get(identity.kind, "identity")
    return Finding(
        rule=NAME,
        code="PROTECTED_IDENTITY",
        where=where,
        kind=identity.kind.value,
        advice=(
            f"Remove the {noun} of a person protected in case {identity.case} (found in {where}, "
            f"written as: {hit.form}), or record their written consent to be named to "
            f"{_listing(recipients)}."
        ),
        recipients=recipients,
        case=identity.case,
        private_detail=f'{noun} "{identity.value}"' + _written(hit),
    )


def _name_part_finding(hit: IdentityHit, where: str, recipients: tuple[str, ...]) -> Finding:
    identity = hit.identity
    return Finding(
        rule=NAME,
        code="PROTECTED_NAME_PART",
        where=where,
        kind=identity.kind.value,
        advice=(
            f"{where[0].upper()}{where[1:]} contains the {hit.form} of a person protected in case "
            f"{identity.case}, on its own. It may mean someone else with that name: if it does, a "
            f"second committee member can release the message; if it is the protected person, "
            f"remove it or record their written consent to be named to {_listing(recipients)}."
        ),
        recipients=recipients,
        case=identity.case,
        private_detail=f'{hit.form} "{hit.variant}" of {IDENTITY_NOUNS.get(identity.kind, "identity")} '
        f'"{identity.value}"',
    )


def _written(hit: IdentityHit) -> str:
    """How the identity was written, when that differs from the registered value."""
    if hit.variant == normalize(hit.identity.value):
        return ""
    return f' (written as {hit.form}: "{hit.variant}")'


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
