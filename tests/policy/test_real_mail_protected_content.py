"""Real mail and protected-content: learnt messages are found only where their text really is.

The corpus (../shared/real-mail) is read in place. Two measurements of false positives:

- the 18 messages people wrote by hand (the lkml and notmuch list posts) are learnt as reports,
  and every other message of the corpus is sent to an outsider: none is refused, and the only
  matches among the posts themselves are real quotes (a run of at least 12 identical words);
- every readable message is learnt, and each is checked against all the others: a message is
  refused only for another message it shares a run of at least 12 identical words with (many
  fixtures of the same library are copies of each other, and bounce reports share their
  template), apart from the few pairs listed in TEMPLATES, which share a machine-written template
  with one field changed: the edit-tolerant check finds those by design.

Signatures, list footers, disclaimers and attribution lines are shared by many messages; they
are not learnt (see ``own_words``), so they never make two unrelated messages match.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from gateway.policy.fingerprint import FingerprintIndex, ProtectedDocument, document_shingles, learnable_texts
from gateway.policy.matcher import IdentityMatcher
from gateway.policy.mime import parse_message
from gateway.policy.model import Envelope, ParsedMessage, RuleContext
from gateway.policy.rules import protected_content
from gateway.policy.rules.protected_content import Params

KEY = bytes(range(11, 43))
OUTSIDER = "moderator@forum.example.net"
HAND_WRITTEN = ("lkml/", "notmuch/")
# Pairs (message, learnt message) that share a machine-written template with one field changed.
TEMPLATES = {
    ("flanker/bounce--gmail-invalid-address.eml", "flanker/bounce--gmail-no-dns.eml"): "Gmail bounce",
    ("flanker/bounce--gmail-no-dns.eml", "flanker/bounce--gmail-invalid-address.eml"): "Gmail bounce",
    (
        "mikel-mail/multipart_report_emails--report_422.eml",
        "mikel-mail/multipart_report_emails--report_530.eml",
    ): "the same mail server's bounce, another date and host",
    (
        "mikel-mail/multipart_report_emails--report_530.eml",
        "mikel-mail/multipart_report_emails--report_422.eml",
    ): "the same mail server's bounce, another date and host",
}


@cache
def corpus(folder: Path) -> dict[str, ParsedMessage]:
    parsed = {}
    for path in sorted(folder.rglob("*.eml")):
        message = parse_message(path.read_bytes())
        if not message.ambiguities:  # refused before any rule runs
            parsed[str(path.relative_to(folder))] = message
    return parsed


def learnt(messages: dict[str, ParsedMessage]) -> FingerprintIndex:
    index = FingerprintIndex(KEY)
    for name, message in messages.items():
        index.add(ProtectedDocument("case", name, None, document_shingles(learnable_texts(message), KEY)))
    return index


def refused_for(message: ParsedMessage, index: FingerprintIndex, name: str) -> set[str]:
    """The learnt messages (other than ``name`` itself) ``message`` is refused for."""
    context = RuleContext(
        conduct_address="conduct@example.org",
        committee=frozenset({"ada@example.org"}),
        member_names=(),
        internal_domains=frozenset({"example.org"}),
        finder=IdentityMatcher.build(()),
        consents=frozenset(),
        protected_content=_Without(index, name),
    )
    envelope = Envelope(mail_from="ada@example.org", rcpt_tos=(OUTSIDER,), authenticated_as="ada@example.org")
    findings = protected_content.check(message, envelope, context, Params())
    return {finding.private_detail.removeprefix("protected document ") for finding in findings}


class _Without:
    """The index without one document (a message is not checked against itself)."""

    def __init__(self, index: FingerprintIndex, name: str) -> None:
        self._index = index
        self._name = name

    def overlaps(self, text: str) -> list:  # type: ignore[type-arg]
        return [overlap for overlap in self._index.overlaps(text) if overlap.document != self._name]

    def named_by(self, case: str, person: str) -> frozenset:  # type: ignore[type-arg]
        return frozenset()


def longest_shared_run(message: ParsedMessage, index: FingerprintIndex, document: str) -> int:
    return max(
        (o.longest_run for s in message.segments for o in index.overlaps(s.text) if o.document == document),
        default=0,
    )


def test_hand_written_mail_learnt_as_reports_refuses_no_unrelated_message(real_mail_dir: Path) -> None:
    messages = corpus(real_mail_dir)
    reports = {name: message for name, message in messages.items() if name.startswith(HAND_WRITTEN)}
    assert len(reports) >= 15
    index = learnt(reports)
    refused = {name: refused_for(message, index, name) for name, message in messages.items()}
    assert {name for name, found in refused.items() if found and not name.startswith(HAND_WRITTEN)} == set()
    for name, found in refused.items():
        for document in found:
            assert longest_shared_run(messages[name], index, document) >= 12, (name, document)


def test_every_message_learnt_a_message_is_refused_only_for_text_it_really_shares(
    real_mail_dir: Path,
) -> None:
    messages = corpus(real_mail_dir)
    index = learnt(messages)
    unexplained = {
        (name, document)
        for name, message in messages.items()
        for document in refused_for(message, index, name)
        if longest_shared_run(message, index, document) < 12 and (name, document) not in TEMPLATES
    }
    assert unexplained == set()
