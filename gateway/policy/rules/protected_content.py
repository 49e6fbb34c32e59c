"""A reporter's or witness's own words never reach anyone outside the committee.

The guidelines say: *never forward communication [...] of reporters outside of the code of conduct
committee, without the express written permission of the person concerned*, and, for mail to
administrators, moderators or the reported party, *describe observable behaviors without quoting
unique phrasing that could identify sources*.

The gateway learns the messages reporters and witnesses send to the committee (through the journal
intake, or ``conduct-gateway case add-report CASE FILE.eml``) and keeps only fingerprints of them:
keyed hashes of every run of 4 consecutive words, never the words. Quoted lines, attribution lines
("On Mon, ... wrote:"), the signature and a closing list footer or legal disclaimer are not
learnt: they are not the author's words, and unrelated mail shares them. When at least one
**envelope** recipient is outside the committee (or is a member with a conflict of interest on the
case the protected message belongs to), every text of the outgoing message is compared with them:
text and HTML parts, text attachments, attached and forwarded messages, headers. Texts are
decoded and normalised first (any transfer encoding and charset, HTML rendered, case, accents,
look-alike letters), only words count, and British and American spellings are one word
("organised"/"organized", "behaviour"/"behavior", "travelled"/"traveled", "centre"/"center"): a
passage reflowed to another line width, quoted with ``> `` or ``> > ``, or pasted into HTML is the
same passage.

- ``PROTECTED_CONTENT``: the message repeats a protected message, in one of three ways:

  * an **edited copy**: a stretch of ``passage_words`` words (16) in which at least
    ``min_share`` (75%) of the words are repeated word for word, in runs of 5 or more words;
  * an **exact passage** of at least ``min_run_words`` (12) consecutive words;
  * **pieces** of 8 or more identical words that add up to ``min_fraction`` (30%) of the
    protected message (and to as many words as a ``min_run_words`` passage).

  So a word substituted, inserted or dropped, a letter changed inside a word, or a spelling
  variant does not hide a copy: each changed or added word costs only itself, as long as at least
  5 unchanged words separate two changes, e.g. one word in six changed throughout still counts.
  **Not caught**: a rewording that leaves no 5 consecutive words unchanged (one word in four or
  five changed), fragments of 4 words or fewer in another order, synonyms throughout, a
  translation, a summary. Short common phrases ("thank you for your message", "please let me
  know if you have any questions") are below the threshold, and 4-word sequences found in 50 or
  more protected messages do not count. Measured on the real-mail collection (334 public test and
  list messages): with the 18 hand-written list posts learnt as reports, none of the 289 other
  messages is refused (0 false positives); with every readable message (307) learnt, each checked
  against all the others, 59 are refused, 55 of them for a message they share at least 12
  identical consecutive words with (fixtures that copy each other, bounce reports) and 4 for a
  bounce template with a date, host or address changed. The finding says where, how much, and
  which case, never the words; e.g. *part 1 (text/plain) repeats 34 words (60%) of a message a
  reporter or witness sent in case home shelf. Describe the behaviour in your own words instead
  of quoting or forwarding it.*

A reporter's own words may always go back to that reporter (``self_disclosure``), so the committee
can reply with the usual quote (the names they wrote in it: see reporter-protection's
``reporter_own_words``). Consent recorded in a case (``consents``) is consent to be *named* to a
recipient, which is not consent to have one's messages forwarded: it lifts this finding only when
``consent_lifts`` is true.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from gateway.policy.fingerprint import SHINGLE_WORDS
from gateway.policy.model import (
    ContentOverlap,
    Envelope,
    Finding,
    IdentityKind,
    ParsedMessage,
    RuleContext,
)
from gateway.policy.normalize import normalize
from gateway.policy.passages import Passage, best_passage

NAME = "protected-content"

CODES = {
    "PROTECTED_CONTENT": (
        "The message repeats part of a message a reporter or witness sent to the committee, and would "
        "reach a recipient outside the committee."
    ),
}


class Params(BaseModel):
    """Options of the protected-content rule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_run_words: int = Field(
        12,
        ge=8,
        le=500,
        description=(
            "A passage of at least this many consecutive words repeated verbatim from a protected message "
            "is a finding (8 at least)."
        ),
    )
    passage_words: int = Field(
        16,
        ge=8,
        le=500,
        description=(
            "Length of the stretches judged for an edited copy: a stretch of this many words in which at "
            "least min_share of the words are repeated is a finding."
        ),
    )
    min_share: float = Field(
        0.75,
        ge=0.5,
        le=1,
        description=(
            "Share of a passage_words stretch that must be repeated word for word, in runs of 5 or more "
            "words, for the stretch to count as a copy (1: no word changed)."
        ),
    )
    min_fraction: float = Field(
        0.3,
        gt=0,
        le=1,
        description=(
            "Repeating at least this share of a protected message in shorter pieces is also a finding "
            "(catches lightly edited copies)."
        ),
    )
    self_disclosure: bool = Field(
        True,
        description="Allow a reporter's or witness's own words in mail to one of their recorded addresses.",
    )
    consent_lifts: bool = Field(
        False,
        description=(
            "Let a consent record (permission to be named to a recipient) also allow that person's words "
            "to reach that recipient. Off: consent to be named is not consent to be quoted."
        ),
    )


def check(message: ParsedMessage, envelope: Envelope, context: RuleContext, params: Params) -> list[Finding]:
    """Report protected passages in a message going outside the committee."""
    # Outsiders, and members with a conflict of interest on some case (outside it for that case).
    outsiders: dict[str, str] = {}
    for recipient in envelope.rcpt_tos:
        if not context.is_committee(recipient) or context.conflicted_cases(recipient):
            outsiders.setdefault(recipient.lower(), recipient)
    if not outsiders:
        return []
    strongest: dict[tuple[str, str], tuple[ContentOverlap, int, list[str]]] = {}
    for segment in message.segments:
        for overlap in context.protected_content.overlaps(segment.text):
            repeated = _repeated_words(overlap, params)
            if not repeated:
                continue
            key = (overlap.case, overlap.document)
            current = strongest.get(key)
            if current is None:
                strongest[key] = (overlap, repeated, [segment.where])
                continue
            best, most, places = current
            if segment.where not in places:
                places.append(segment.where)
            if (repeated, overlap.fraction) > (most, best.fraction):
                strongest[key] = (overlap, repeated, places)
    findings = []
    for overlap, repeated, places in strongest.values():
        concerned = tuple(
            recipient
            for recipient in outsiders.values()
            if not context.is_inside(recipient, overlap.case)
            and not _allowed(overlap, recipient, context, params)
        )
        if concerned:
            findings.append(_finding(overlap, repeated, places, concerned))
    return findings


def _repeated_words(overlap: ContentOverlap, params: Params) -> int:
    """How many words of the text repeat the document, if past a threshold; 0 otherwise."""
    passage: Passage | None = best_passage(overlap, params.passage_words, params.min_share)
    if passage is not None:
        return max(passage.covered, overlap.longest_run)
    if overlap.longest_run >= params.min_run_words:
        return overlap.longest_run
    shingles_in_a_passage = params.min_run_words - SHINGLE_WORDS + 1
    if overlap.fraction >= params.min_fraction and overlap.matched >= shingles_in_a_passage:
        return max(overlap.longest_run, sum(end - start for start, end in overlap.spans))
    return 0


def _allowed(overlap: ContentOverlap, recipient: str, context: RuleContext, params: Params) -> bool:
    if overlap.person is None:
        return False
    if params.consent_lifts and any(
        consent.case == overlap.case
        and consent.person == overlap.person
        and consent.recipient == recipient.lower()
        for consent in context.consents
    ):
        return True
    if not params.self_disclosure:
        return False
    wanted = normalize(recipient.strip("<>"))
    return any(
        identity.kind is IdentityKind.ADDRESS
        and identity.case == overlap.case
        and identity.person == overlap.person
        and normalize(identity.value.strip().strip("<>")) == wanted
        for identity in context.finder.find(recipient)
    )


def _finding(
    overlap: ContentOverlap, repeated: int, places: list[str], recipients: tuple[str, ...]
) -> Finding:
    where = ", ".join(places)
    share = max(1, round(overlap.fraction * 100))
    return Finding(
        rule=NAME,
        code="PROTECTED_CONTENT",
        where=where,
        kind="passage",
        advice=(
            f"{where[0].upper()}{where[1:]} repeats {repeated} words ({share}%) of a "
            f"message a reporter or witness sent in case {overlap.case}, and the message goes to "
            f"{_listing(recipients)}. Describe the behaviour in your own words instead of quoting or "
            "forwarding their message."
        ),
        recipients=recipients,
        case=overlap.case,
        private_detail=f"protected document {overlap.document}",
    )


def _listing(recipients: tuple[str, ...]) -> str:
    if len(recipients) == 1:
        return recipients[0]
    return ", ".join(recipients[:-1]) + " and " + recipients[-1]
