"""Subjects and attachment file names use code names, never a protected person's real name.

The committee's manual gives every case a code name ("home shelf") and every person in it a person
code name ("quiet-heron"), and keeps real names out of everything it can: a Subject line or a file
name is copied into every mailbox, folder listing, search index and notification that the message
ever passes through, long after the case is closed. This rule checks **every** outgoing message —
also mail that stays inside the committee — for the real name or alias of a reporter or witness of
any case in the message's Subject and in the names of its attachments (decoded and normalised as
for reporter-protection, so encoded or look-alike spellings are found too, and in any strong form the
gateway derives: "Haddad, Noor", "Mx Haddad", "N. Haddad"...), and suggests the code names to use
instead. A lone given name or surname (a weak form) is not reported here. It does not look at the
body: reporter-protection guards that for outsiders.

- ``REAL_NAME_IN_SUBJECT``: the Subject contains a protected person's name or alias.
- ``REAL_NAME_IN_FILENAME``: an attachment's file name does.

The shipped policy warns (the message is delivered and the sender gets a notice). What the sender is
told, e.g.: *The Subject contains the name of a person protected in case home shelf. Subjects and
file names are copied into every mailbox and search index the message reaches: write the code names
instead ("home shelf", "quiet-heron").* Only `conduct-gateway check` shows which name it found.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.policy.model import (
    IDENTITY_NOUNS,
    Envelope,
    Finding,
    IdentityKind,
    ParsedMessage,
    ProtectedIdentity,
    RuleContext,
    SegmentKind,
    TextSegment,
)
from gateway.policy.reading import found_in

NAME = "code-names"

CODES = {
    "REAL_NAME_IN_SUBJECT": "The Subject contains a reporter's or witness's real name or alias.",
    "REAL_NAME_IN_FILENAME": (
        "An attachment's file name contains a reporter's or witness's real name or alias."
    ),
}

SUBJECT_WHERE = "header Subject"  # the top-level Subject, as gateway.policy.mime names its segment


class Params(BaseModel):
    """Options of the code-names rule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kinds: tuple[Literal["name", "alias", "address", "username"], ...] = Field(
        ("name", "alias"),
        description="Which kinds of identity count as a real name (add address and username to widen it).",
    )
    subject: bool = Field(True, description="Check the Subject.")
    filenames: bool = Field(True, description="Check the file names of attachments and parts.")
    suggest: bool = Field(
        True, description="Name the case's and the person's code names in the advice to the sender."
    )


def check(message: ParsedMessage, envelope: Envelope, context: RuleContext, params: Params) -> list[Finding]:
    """Report protected people's real names in the Subject and in file names."""
    kinds = {IdentityKind(kind) for kind in params.kinds}
    findings: dict[tuple[str, str, str], Finding] = {}
    for segment in message.segments:
        code = _code_for(segment, params)
        if code is None:
            continue
        for identity in found_in(context.finder, segment):
            key = (identity.case, identity.person, segment.where)
            if identity.kind in kinds and key not in findings:
                # A sender with a conflict of interest on the case must not learn which case it is.
                reveal = context.is_inside(envelope.authenticated_as, identity.case)
                findings[key] = _finding(code, identity, segment.where, params, reveal=reveal)
    return list(findings.values())


def _code_for(segment: TextSegment, params: Params) -> str | None:
    if params.subject and segment.kind is SegmentKind.HEADER and segment.where == SUBJECT_WHERE:
        return "REAL_NAME_IN_SUBJECT"
    if params.filenames and segment.kind is SegmentKind.FILENAME:
        return "REAL_NAME_IN_FILENAME"
    return None


def _finding(code: str, identity: ProtectedIdentity, where: str, params: Params, *, reveal: bool) -> Finding:
    noun = IDENTITY_NOUNS.get(identity.kind, "identity")
    place = "The Subject" if code == "REAL_NAME_IN_SUBJECT" else f"The {where}"
    case = f" in case {identity.case}" if reveal else ""
    advice = (
        f"{place} contains the {noun} of a protected person{case}. Subjects and file "
        "names are copied into every mailbox and search index the message reaches: write the code "
        "names instead"
    )
    advice += f' ("{identity.case}", "{identity.person}").' if params.suggest and reveal else "."
    return Finding(
        rule=NAME,
        code=code,
        where=where,
        kind=identity.kind.value,
        advice=advice,
        case=identity.case,
        private_detail=f'{noun} "{identity.value}"',
    )
