"""Real mail: every message of the shared corpus decodes, and none names a protected person.

The corpus (../shared/real-mail, see its SOURCES.md) is read in place, never copied. The test
policy protects people chosen to hit the corpus's traps: a two-letter alias ("JP", as in
ISO-2022-JP and .co.jp; "Li", as in <li> and Lijin), a first name inside other words ("Jin", as in
Beijing), a common surname inside a full name ("Jin Park"; a developer named Park is in a Cc line),
and a username equal to a common word's tail ("jpark"; sparklist).

Strong forms (``PROTECTED_IDENTITY``) must never fire on the corpus. Weak forms (a lone given name
or surname, ``PROTECTED_NAME_PART``, held for review) are expected to fire where the corpus really
holds that word as a name: the test policy's surname "Park" is a real developer's surname in one
Cc line, and that is the only one. With the shipped example case (gateway/data/default-policy.yaml, whose
everyday given names "Robin" and "Sam" are listed as such), no finding of either kind.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from gateway.policy.engine import protected_identities
from gateway.policy.loader import load_policy
from gateway.policy.matcher import IdentityMatcher
from gateway.policy.mime import parse_message
from gateway.policy.model import Envelope, IdentityKind, ParsedMessage, ProtectedIdentity, RuleContext
from gateway.policy.rules import reporter_protection
from tests.conftest import REAL_MAIL

CORPUS_SIZE = 334

PROTECTED = IdentityMatcher.build(
    ProtectedIdentity("home-shelf", person, kind, value)
    for person, kind, value in (
        ("r1", IdentityKind.NAME, "Jin Park"),
        ("r1", IdentityKind.ALIAS, "JP"),
        ("r1", IdentityKind.ALIAS, "Jin"),
        ("r1", IdentityKind.USERNAME, "jpark"),
        ("r1", IdentityKind.ADDRESS, "jin.park@example.org"),
        ("w1", IdentityKind.NAME, "Mei Li"),
        ("w1", IdentityKind.ALIAS, "Li"),
        ("w1", IdentityKind.USERNAME, "@meili"),
    )
)
CONTEXT = RuleContext(
    conduct_address="conduct@example.org",
    committee=frozenset({"ada@example.org"}),
    member_names=(("ada@example.org", "Ada Quill"),),
    internal_domains=frozenset({"example.org"}),
    finder=PROTECTED,
    consents=frozenset(),
)
SHIPPED = load_policy(Path(__file__).resolve().parents[2] / "gateway" / "data" / "default-policy.yaml")
SHIPPED_CONTEXT = replace(
    CONTEXT,
    finder=IdentityMatcher.build(protected_identities(SHIPPED), titles=SHIPPED.name_forms.all_titles()),
)
# Where a weak form of the test policy's people is truly written in the corpus: (message, where).
WEAK_IN_CORPUS = {("lkml/samsung-soc-pinctrl-reply-cced7901.eml", "header Cc")}
TO_AN_OUTSIDER = Envelope(
    mail_from="ada@example.org",
    rcpt_tos=("moderator@forum.example.net", "conduct@example.org"),
    authenticated_as="ada@example.org",
)

# Corpus messages the gateway refuses as ambiguous, and why: each breaks MIME or RFC 5322 in a way
# two readers can resolve differently. Any other corpus message must be accepted.
REFUSED = {
    "cpython/msg_15.eml": "reuses the boundary",
    "cpython/msg_20.eml": "more than one Cc header",
    "cpython/msg_25.eml": "more than one To header",
    "cpython/msg_31.eml": "no part matching its boundary",
    "cpython/msg_38.eml": "no closing boundary",
    "cpython/msg_39.eml": "invalid base64",
    "flanker/enclosed-bad-encoding.eml": "not valid UTF-8",
    "flanker/enclosed-broken-body.eml": "invalid base64",
    "flanker/enclosed-broken.eml": "no closing boundary",
    "flanker/enclosed-endless.eml": "too many MIME parts",
    "flanker/from-encoding.eml": "not valid UTF-8",
    "flanker/mailformed-headers.eml": "no part matching its boundary",
    "flanker/missing-final-boundary.eml": "no closing boundary",
    "flanker/russian-attachment-yahoo.eml": "not valid UTF-8",
    "flanker/spam--broken-headers.eml": "not valid UTF-8",
    "mikel-mail/error_emails--invalid_subject_characters.eml": "not valid UTF-8",
    "mikel-mail/error_emails--multiple_content_types.eml": "more than one Content-Type header",
    "mikel-mail/error_emails--multiple_invalid_content_dispositions.eml": "more than one Content-Disposition",
    "mikel-mail/error_emails--multiple_references_with_one_invalid.eml": "more than one References header",
    "mikel-mail/mime_emails--raw_email4.eml": "no closing boundary",
    "mikel-mail/mime_emails--raw_email_with_binary_encoded.eml": "more than one Subject header",
    "mikel-mail/mime_emails--raw_email_with_multipart_mixed_quoted_boundary.eml": "one Subject header",
    "mikel-mail/pr--error_emails--utf8_multipart_boundary.eml": "no part matching its boundary",
    "spamassassin/nice--cjk--big5-base64.1.eml": "invalid base64",
    "spamassassin/nice--cjk--gb2312.1.eml": "not valid UTF-8",
    "spamassassin/welcomelists--mlist_yahoo_groups_message.eml": "no part matching its boundary",
    "spamassassin/welcomelists--oracle_net_techblast.eml": "no closing boundary",
}


def corpus() -> list[str]:
    return sorted(str(path.relative_to(REAL_MAIL)) for path in REAL_MAIL.rglob("*.eml"))


def test_corpus_is_complete(real_mail_dir: Path) -> None:
    assert len(corpus()) == CORPUS_SIZE
    assert set(REFUSED) <= set(corpus())


@pytest.mark.timeout(10)
@pytest.mark.parametrize("name", corpus())
def test_real_message(real_mail_dir: Path, name: str) -> None:
    parsed = parse_message((real_mail_dir / name).read_bytes())
    assert isinstance(parsed, ParsedMessage)
    if name in REFUSED:
        assert any(REFUSED[name] in reason for reason in parsed.ambiguities), parsed.ambiguities
        return
    assert parsed.ambiguities == ()
    findings = reporter_protection.check(parsed, TO_AN_OUTSIDER, CONTEXT, reporter_protection.Params())
    named = [
        (finding.where, finding.private_detail)
        for finding in findings
        if finding.code == "PROTECTED_IDENTITY"
    ]
    assert named == []
    weak = {(name, finding.where) for finding in findings if finding.code == "PROTECTED_NAME_PART"}
    assert weak == {(message, where) for message, where in WEAK_IN_CORPUS if message == name}
    # What is left can only be parts the gateway honestly cannot read, pictures included.
    assert len(findings) == len(weak) + len(parsed.uninspectable) + len(parsed.media)
    shipped = reporter_protection.check(parsed, TO_AN_OUTSIDER, SHIPPED_CONTEXT, reporter_protection.Params())
    assert [f.code for f in shipped if f.code != "UNINSPECTABLE_CONTENT"] == []


def test_the_shipped_everyday_words_are_what_keeps_real_mail_quiet(real_mail_dir: Path) -> None:
    # Not vacuous: without the example's everyday_words, "Sam" (a real contributor's given name in
    # the corpus) is a weak form of the protected witness "Sam Okonkwo-Reyes", held for review.
    name = "lkml/samsung-soc-pinctrl-reply-cced7901.eml"
    parsed = parse_message((real_mail_dir / name).read_bytes())
    loud = tuple(replace(identity, everyday_words=()) for identity in protected_identities(SHIPPED))
    context = replace(CONTEXT, finder=IdentityMatcher.build(loud))
    findings = reporter_protection.check(parsed, TO_AN_OUTSIDER, context, reporter_protection.Params())
    assert {finding.code for finding in findings} == {"PROTECTED_NAME_PART"}
    assert all(finding.case == "home shelf" for finding in findings)
